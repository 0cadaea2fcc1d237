"""Running subjects side by side: peer and ours alternating, several repetitions, medians."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.env import log
from benchmarks.stats import median


def alternate(reps: int, subjects: dict[str, Callable[[], dict]]) -> dict[str, list[dict]]:
    """Runs every subject once per repetition, in the given order (put ours and the peer
    next to each other), and reverses the order on every other repetition so neither side
    always runs first. Returns each subject's summaries."""
    out: dict[str, list[dict]] = {k: [] for k in subjects}
    names = list(subjects)
    for rep in range(reps):
        order = names if rep % 2 == 0 else list(reversed(names))
        for name in order:
            r = subjects[name]()
            if r.get("errors"):
                log(f"  {name}: {r['errors']} errors, e.g. {r.get('error_samples')}")
            figures = f"{r['throughput']:.4g}/s p50 {r['p50_us']:.0f}us p99 {r['p99_us']:.0f}us"
            log(f"  rep {rep + 1}/{reps} {name}: {figures}")
            out[name].append(r)
    return out


def med(results: dict[str, list[dict]], name: str, key: str) -> float:
    return median([r[key] for r in results[name]])


def reps_detail(results: dict[str, list[dict]], key: str) -> dict:
    """Every repetition's value of `key`, for the JSON."""
    return {name: [round(r[key], 3) for r in rs] for name, rs in results.items()}


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None
