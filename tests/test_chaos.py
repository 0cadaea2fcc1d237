"""The chaos suite's short versions (benchmarks/chaos; `make chaos` runs them at full size).

Each scenario starts real processes on loopback (registries, Postgres, SeaweedFS, agents),
injects its fault (SIGKILL, `pg_ctl -m immediate`, a full disk, a slow, partitioned or
half-open link) and audits the outcome. The invariants, asserted for every scenario:
nothing acknowledged is lost, nothing is duplicated, no bad bytes are served (every
inference answer comes from the version it names, every download verifies its sha256),
watchers get every event exactly once, in order, and no inference request fails at the
agents. Scenarios whose fault is not Postgres itself run on a fresh database of the
session's Postgres. The scenarios mostly wait (outages, restarts, timeouts), so they run
four at a time, each in a process of its own, once per session; each test reads its row.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.chaos.report import Row, table
from benchmarks.chaos.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def chaos_rows(postgres, tmp_path_factory) -> dict[str, Row]:
    out = tmp_path_factory.mktemp("chaos") / "chaos.json"
    cmd = [sys.executable, "-m", "benchmarks.chaos", "--quick", "--jobs", "4", "--out", str(out)]
    proc = subprocess.run([*cmd, "--database-url", postgres.url], cwd=REPO, capture_output=True, text=True, timeout=560)
    print(proc.stdout)
    assert out.exists(), proc.stderr[-4000:]
    return {r["key"]: Row(**r) for r in json.loads(out.read_text())["rows"]}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_chaos_scenario_keeps_the_invariants(scenario, chaos_rows):
    row = chaos_rows[scenario]
    print("\n" + table([row]) + f"\n{row.notes}")
    assert row.violations == [], f"{row.scenario}: {row.violations}"
    assert row.acknowledged > 0
    assert row.lost == 0 and row.duplicated == 0
    assert row.agent_failures in (None, 0)


def test_registry_channels_detect_half_open_connections(monkeypatch):
    """The network scenario's finding: a watch on a connection that went silent (no reset)
    waited forever. Channels to the registry ping after MODELREG_KEEPALIVE_SECONDS (10)."""
    from modelreg.credentials import _options, keepalive_options

    monkeypatch.delenv("MODELREG_KEEPALIVE_SECONDS", raising=False)
    opts = dict(keepalive_options())
    assert opts["grpc.keepalive_time_ms"] == opts["grpc.http2.ping_timeout_ms"] == 10_000
    monkeypatch.setenv("MODELREG_KEEPALIVE_SECONDS", "2")
    assert dict(_options([], True))["grpc.keepalive_time_ms"] == 2000
    assert dict(_options([("grpc.keepalive_time_ms", 5)], True))["grpc.keepalive_time_ms"] == 5  # the caller wins
    assert "grpc.keepalive_time_ms" not in dict(_options([], False))
    monkeypatch.setenv("MODELREG_KEEPALIVE_SECONDS", "soon")
    with pytest.raises(ValueError, match="MODELREG_KEEPALIVE_SECONDS='soon'.*set it like 10"):
        keepalive_options()


async def test_a_connection_asyncpg_corrupted_by_a_dying_session_is_unavailable_not_internal():
    """The Postgres scenario's finding: during a SIGKILL of Postgres a registration came back
    INTERNAL with asyncpg's InternalClientError (asyncpg#1069). It is a lost database: the
    caller gets UNAVAILABLE with the DATABASE_UNAVAILABLE reason, and retries."""
    import asyncpg
    import grpc

    from registry_server.services.errors import abort

    class Aborted(Exception):
        pass

    class Context:  # the two calls abort() makes; a unit test of the mapping alone
        status = None

        async def abort_with_status(self, status):
            self.status = status
            raise Aborted

        async def abort(self, code, details):
            self.status = (code, details)
            raise Aborted

    ctx = Context()
    with pytest.raises(Aborted):
        await abort(ctx, asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"))
    assert ctx.status.code == grpc.StatusCode.UNAVAILABLE
    details = dict(ctx.status.trailing_metadata)["grpc-status-details-bin"]
    assert b"DATABASE_UNAVAILABLE" in details
