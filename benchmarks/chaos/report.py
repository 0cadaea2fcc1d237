"""One row per scenario, the table `make chaos` prints, and benchmarks/results/chaos.json."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

COLUMNS = ("scenario", "attempted", "acknowledged", "lost", "duplicated", "failed at agents", "recovered in")


@dataclass
class Row:
    """What one scenario measured. `attempted` and `acknowledged` count the scenario's
    operations (registrations, promotions, downloads, inference requests: see `unit`);
    `agent_failures` is None where no agent serves; `recover_s` is from the fault to the
    first success after it (None: nothing had to recover). `violations` lists every
    broken invariant; an empty list is a pass."""

    scenario: str
    unit: str
    attempted: int
    acknowledged: int
    lost: int
    duplicated: int
    agent_failures: int | None
    recover_s: float | None
    violations: list[str] = field(default_factory=list)
    notes: str = ""
    size: str = ""
    key: str = ""  # the scenario's id (`--only KEY`)

    @property
    def ok(self) -> bool:
        return not self.violations


def _cells(r: Row) -> list[str]:
    return [
        r.scenario,
        f"{r.attempted:,} {r.unit}",
        f"{r.acknowledged:,}",
        str(r.lost),
        str(r.duplicated),
        "-" if r.agent_failures is None else f"{r.agent_failures:,}",
        "-" if r.recover_s is None else f"{r.recover_s:.1f} s",
    ]


def table(rows: list[Row]) -> str:
    """A Markdown table (it reads as plain text too)."""
    cells = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    line = lambda cs: "| " + " | ".join(c.ljust(w) for c, w in zip(cs, widths, strict=True)) + " |"  # noqa: E731
    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells[1:]]
    return "\n".join(out)


def write(rows: list[Row], path: Path, *, quick: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "quick": quick,
        "rows": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
