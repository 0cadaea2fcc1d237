"""One module per chaos scenario; `SCENARIOS` maps each id to its `run(work, size) -> Row`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from benchmarks.chaos.report import Row
from benchmarks.chaos.scenarios import postgres_kill
from benchmarks.chaos.scenarios.common import Size

SCENARIOS: dict[str, Callable[[Path, Size], Row]] = {
    "postgres_embedded": partial(postgres_kill.run, external=False),
    "postgres_external": partial(postgres_kill.run, external=True),
}
