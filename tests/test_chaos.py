"""The chaos suite's short versions (benchmarks/chaos, `make chaos` runs them at full size).

Each scenario starts real processes on loopback (registries, Postgres, SeaweedFS, agents),
injects its fault (SIGKILL, `pg_ctl -m immediate`, a full disk, a slow, partitioned or
half-open link) and audits the outcome. The invariants, asserted for every scenario:
nothing acknowledged is lost, nothing is duplicated, no bad bytes are served (every
inference answer comes from the version it names, every download verifies its sha256),
and watchers get every event exactly once, in order. Scenarios whose fault is not
Postgres itself run on a fresh database of the session's Postgres.
"""

from __future__ import annotations

import uuid

import pytest

from benchmarks.chaos.report import table
from benchmarks.chaos.scenarios import SCENARIOS
from benchmarks.chaos.scenarios.common import Size
from conftest import _admin


@pytest.fixture
def fresh_database(postgres):
    """Makes databases on the session Postgres; drops them at the end."""
    made: list[str] = []

    def make() -> str:
        name = f"chaos_{uuid.uuid4().hex[:12]}"
        _admin(postgres, f'CREATE DATABASE "{name}"')
        made.append(name)
        return postgres.url_for(name)

    yield make
    for name in made:
        _admin(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chaos_scenario_keeps_the_invariants(scenario, tmp_path, fresh_database):
    row = SCENARIOS[scenario](tmp_path, Size(quick=True, database=fresh_database))
    print("\n" + table([row]) + f"\n{row.notes}")
    assert row.violations == [], f"{row.scenario}: {row.violations}"
    assert row.acknowledged > 0
    assert row.lost == 0 and row.duplicated == 0
    assert row.agent_failures in (None, 0)
