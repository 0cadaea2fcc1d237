"""One module per chaos scenario; `SCENARIOS` maps each id to its `run(work, size) -> Row`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from benchmarks.chaos.report import Row
from benchmarks.chaos.scenarios import (
    agent_kill,
    cache_full,
    network,
    postgres_kill,
    registry_down,
    registry_kill,
    replica_kill,
    store_kill,
)
from benchmarks.chaos.scenarios.common import Size

SCENARIOS: dict[str, Callable[[Path, Size], Row]] = {
    "postgres_embedded": partial(postgres_kill.run, external=False),
    "postgres_external": partial(postgres_kill.run, external=True),
    "registry_upload": registry_kill.upload,
    "registry_download": registry_kill.download,
    "store_upload": store_kill.run,
    "registry_down": registry_down.run,
    "replica_kill": replica_kill.run,
    "agent_download": partial(agent_kill.run, during="download"),
    "agent_swap": partial(agent_kill.run, during="swap"),
    "cache_full": cache_full.run,
    "network": network.run,
}
