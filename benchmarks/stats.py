"""Small statistics helpers shared by the runner and the load generators (stdlib only, so
the MLflow venv can import this file by path too)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1)))))
    return float(ordered[rank])


def summarize(latencies_s: Sequence[float], elapsed_s: float, errors: int = 0) -> dict:
    """Latency percentiles in microseconds and throughput in calls per second."""
    n = len(latencies_s)
    return {
        "count": n,
        "errors": errors,
        "elapsed_s": elapsed_s,
        "throughput": n / elapsed_s if elapsed_s > 0 else 0.0,
        "p50_us": percentile(latencies_s, 50) * 1e6,
        "p90_us": percentile(latencies_s, 90) * 1e6,
        "p99_us": percentile(latencies_s, 99) * 1e6,
        "mean_us": (sum(latencies_s) / n * 1e6) if n else 0.0,
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0
