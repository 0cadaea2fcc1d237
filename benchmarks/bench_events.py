"""Goals 6 and 7: promotion -> event at watchers, and fan-out to 1,000 watchers.

Measured once WatchEvents (issue 4) is served; until then the rows say what is missing."""

from __future__ import annotations

from benchmarks.report import Row, not_measurable

NAME = "events"
GOALS = "6,7"


def run(env, cfg) -> list[Row]:
    needs = "WatchEvents served by the registry (issue 4, registry_server/services/events.py)"
    return [
        not_measurable("6", NAME, "promotion -> event at a watcher p50/p99, 100 watchers (vs NOTIFY floor, TF Serving 1 s poll)", needs),
        not_measurable("7", NAME, "last of 1,000 watchers gets the event (p50); one LISTEN connection per process", needs),
    ]
