"""grpc.health.v1 tells the truth: NOT_SERVING (overall and for every service) while Postgres
or the artifact store is unreachable, SERVING again within seconds of recovery; the CLI tells
"cannot connect" apart from "up, but its database is unavailable"."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import pytest
from conftest import free_port, run_cli
from events_helpers import PrivatePostgres
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelreg import Client, errors
from registry_server.app import SERVICE_NAMES
from registry_server.storage import db

pytestmark = pytest.mark.timeout(120)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def statuses(address: str) -> dict[str, int]:
    """The health status of "" and of every registry service."""
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return {
            name: stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            for name in ("", *SERVICE_NAMES)
        }


def wait_for_status(address: str, want: int, timeout: float = 10.0) -> float:
    """Seconds until every name reports `want`; fails after `timeout`."""
    started = time.monotonic()
    while True:
        got = statuses(address)
        if all(s == want for s in got.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"health is {got} after {timeout}s, wanted all {want}")
        time.sleep(0.1)


@pytest.fixture
def private_pg():
    pg = PrivatePostgres()

    async def create_db() -> None:
        conn = await db.connect(pg.url())
        try:
            await conn.execute('CREATE DATABASE "health"')
        finally:
            await conn.close()

    asyncio.run(create_db())
    yield pg
    pg.close()


def test_health_is_not_serving_while_postgres_is_down_and_serving_after(make_registry, private_pg, caplog):
    caplog.set_level(logging.INFO)
    reg = make_registry(database_url=private_pg.url("health"), health_interval=0.2)
    assert set(statuses(reg.address).values()) == {SERVING}
    c = Client(reg.address, actor="t")
    c.create_model("m")

    private_pg.stop()
    assert wait_for_status(reg.address, NOT_SERVING) < 5
    proc = run_cli("models", "list", address=reg.address, check=False)
    assert proc.returncode == 1
    assert f"the registry at {reg.address} is up but its database is unavailable" in proc.stderr, proc.stderr
    assert "cannot connect" not in proc.stderr
    with pytest.raises(errors.Unavailable) as e:
        c.get_model("m")
    assert e.value.reason == "DATABASE_UNAVAILABLE"

    private_pg.start()
    assert wait_for_status(reg.address, SERVING) < 5
    assert c.get_model("m").name == "models/m"
    c.close()
    # An external database: the server stayed up and logged the outage without a traceback,
    # once when it went and once when it came back.
    tracebacks = [f"{r.name}: {r.getMessage()} ({r.exc_info[1]!r})" for r in caplog.records if r.exc_info]
    assert tracebacks == []
    health_lines = [r.getMessage() for r in caplog.records if r.name == "modelreg.health"]
    assert len(health_lines) == 2, health_lines
    assert "reports NOT_SERVING" in health_lines[0]
    assert "answer again" in health_lines[1] and "reports SERVING" in health_lines[1], health_lines[1]
    assert "NOT_SERVING" not in health_lines[1]


def test_health_is_not_serving_while_the_artifact_store_is_gone(make_registry, tmp_path):
    store = tmp_path / "store"
    reg = make_registry(artifacts=str(store), health_interval=0.2)
    assert set(statuses(reg.address).values()) == {SERVING}
    store.rename(tmp_path / "unmounted")
    assert wait_for_status(reg.address, NOT_SERVING) < 5
    (tmp_path / "unmounted").rename(store)
    assert wait_for_status(reg.address, SERVING) < 5


def test_cli_says_cannot_connect_when_nothing_listens():
    address = f"127.0.0.1:{free_port()}"
    proc = run_cli("models", "list", address=address, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: cannot connect to the registry at {address}"), proc.stderr
    assert "is up but" not in proc.stderr
