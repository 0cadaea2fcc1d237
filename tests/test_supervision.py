"""The embedded Postgres is supervised: SIGKILLed under a running `modelreg server`, it is
started again with backoff; health says NOT_SERVING meanwhile and SERVING after, RPCs work
again, and the log has one line per event and no traceback."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from test_health import NOT_SERVING, SERVING, wait_for_status

from modelreg import Client
from registry_server.supervisor import _postmaster, postmaster_running

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def test_killed_embedded_postgres_is_restarted_and_the_server_recovers(spawn_registry, tmp_path: Path):
    data = tmp_path / "embedded"
    proc, address = spawn_registry(
        MODELREG_DATABASE_URL="", MODELREG_DATA_DIR=str(data), MODELREG_HEALTH_INTERVAL="0.2"
    )
    wait_for_status(address, SERVING, timeout=30)
    c = Client(address, actor="t")
    c.register("kept", b"weights")
    pgdata = data / "postgres"
    old = _postmaster(pgdata).pid

    os.kill(old, signal.SIGKILL)
    wait_for_status(address, NOT_SERVING, timeout=10)
    wait_for_status(address, SERVING, timeout=60)
    assert _postmaster(pgdata).pid != old
    assert c.get_version("kept", 1).artifact.size_bytes == len(b"weights")
    assert c.register("kept", b"more").version == 2
    c.close()

    log_file = tmp_path / f"server-{address.rsplit(':', 1)[1]}.log"
    deadline = time.monotonic() + 20  # the restart's helper returns once Postgres is ready
    while "is running again" not in log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    new = _postmaster(pgdata).pid
    proc.terminate()
    proc.wait(30)
    log = log_file.read_text()
    assert "Traceback" not in log, log
    lines = [line for line in log.splitlines() if "embedded Postgres" in line]
    assert any("exited; restarting it" in line for line in lines), log
    assert any("is running again" in line for line in lines), log
    assert len(lines) <= 12, lines  # one per event: gone, each failed attempt, back
    # The server's exit stops the Postgres it restarted, as it stops the one it started.
    deadline = time.monotonic() + 20
    while postmaster_running(pgdata) and time.monotonic() < deadline:
        time.sleep(0.2)
    if postmaster_running(pgdata):
        os.kill(new, signal.SIGINT)
        pytest.fail("the restarted Postgres outlived the server")
