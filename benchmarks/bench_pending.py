"""Goals not measured yet: each row says what it needs."""

from __future__ import annotations

from benchmarks.report import Row, not_measurable

NAME = "pending"
GOALS = "9"


def run(env, cfg) -> list[Row]:
    return [
        not_measurable("9", NAME, "zero-drop swaps: ≥1,000 req/s across ≥100 promote/rollback cycles",
                       "a swap-load benchmark driving a serving agent (issue 5 landed; not written yet)"),
    ]
