"""Rows of the results table, the printed table and the JSON file."""

from __future__ import annotations

import json
import operator
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


@dataclass
class Row:
    """One figure. `ratio` is computed the way the goal is stated (`ratio_of`, e.g.
    "ours/MLflow"), and `met` compares it with `target` (None: context, no goal)."""

    goal: str
    bench: str
    figure: str
    ours: float | None = None
    unit: str = ""
    ref: float | None = None
    ref_label: str = ""
    ratio: float | None = None
    ratio_of: str = ""
    target: tuple[str, float] | None = None
    met: bool | None = None
    note: str = ""
    details: dict = field(default_factory=dict)
    # "ratio": the target applies to `ratio`; "ours": to the absolute figure `ours` (in `unit`);
    # "diff": to ours - ref (in `unit`).
    goal_on: str = "ratio"

    def evaluate(self) -> Row:
        if self.goal_on == "diff":
            subject = None if self.ours is None or self.ref is None else self.ours - self.ref
        else:
            subject = self.ours if self.goal_on == "ours" else self.ratio
        if subject is not None and self.target is not None:
            op, value = self.target
            self.met = bool(OPS[op](subject, value))
        return self

    @property
    def goal_text(self) -> str:
        if self.target is None:
            return "context"
        op, value = self.target
        sign = op.replace("<=", "≤").replace(">=", "≥")
        if self.goal_on == "ours":
            return f"ours {sign} {value:g} {self.unit}"
        if self.goal_on == "diff":
            return f"ours − ref {sign} {value:g} {self.unit}"
        return f"{self.ratio_of} {sign} {value:g}"


def not_measurable(goal: str, bench: str, figure: str, needs: str) -> Row:
    return Row(goal=goal, bench=bench, figure=figure, note=f"not measurable yet: needs {needs}")


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        s = f"{v:,.0f}"
    elif abs(v) >= 100:
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}".strip()


def table(rows: list[Row]) -> str:
    header = ("goal", "figure", "ours", "peer or floor", "ratio", "goal", "met?")
    lines = []
    for r in rows:
        if r.note.startswith("not measurable"):
            lines.append((r.goal, r.figure, "-", "-", "-", "-", r.note))
            continue
        ref = f"{_num(r.ref, r.unit)} ({r.ref_label})" if r.ref is not None else (r.ref_label or "-")
        unit = "" if "points" in r.ratio_of else "×"  # a distance in points is not a ratio
        ratio = f"{_num(r.ratio)}{unit} {r.ratio_of}" if r.ratio is not None else "-"
        met = {True: "met", False: "NOT met", None: "-"}[r.met]
        if r.note:
            met = f"{met}  ({r.note})"
        lines.append((r.goal, r.figure, _num(r.ours, r.unit), ref, ratio, r.goal_text if r.target else "context", met))
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header) - 1)]
    out = []
    for i, line in enumerate([header, *lines]):
        cells = [str(c).ljust(w) for c, w in zip(line[:-1], widths, strict=True)] + [str(line[-1])]
        out.append(" | ".join(cells).rstrip())
        if i == 0:
            out.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 8)
    return "\n".join(out)


def write_json(path: Path, rows: list[Row], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": _cpus()},
        **meta,
        "rows": [
            {
                **{k: v for k, v in asdict(r).items() if k != "target"},
                "goal_text": r.goal_text,
                "target": list(r.target) if r.target else None,
            }
            for r in rows
        ],
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
