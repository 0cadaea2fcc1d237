"""Pure view logic behind the pages: metric columns, comparison with deltas and the best
value per column, config diffs, sorting, search. No I/O, no HTTP; unit-tested alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from registry_server.domain import models as dm

# A metric whose name says it measures a cost is better lower (loss, error, latency...);
# any other (accuracy, map50, f1, auc...) is better higher.
_LOWER_IS_BETTER = re.compile(r"(loss|err|error|latency|time|mae|mse|rmse|wer|cer|perplexity|fpr|fnr)", re.I)


def lower_is_better(metric: str) -> bool:
    return bool(_LOWER_IS_BETTER.search(metric))


def metric_keys(versions: Iterable[dm.ModelVersion]) -> list[str]:
    """The union of the versions' metric keys, sorted (compare's discovery rule)."""
    return sorted({k for v in versions for k in v.metrics})


def history_keys(versions: Iterable[dm.ModelVersion]) -> list[str]:
    return sorted({k for v in versions for k in v.metric_history})


def key_metric(model: dm.Model, version: dm.ModelVersion | None) -> str:
    """The metric a model is judged by: its `key_metric` tag, else the version's first
    metric key in name order; '' when there is none."""
    tagged = model.tags.get("key_metric", "")
    if tagged:
        return tagged
    if version is None or not version.metrics:
        return ""
    return sorted(version.metrics)[0]


def best_values(versions: Sequence[dm.ModelVersion], keys: Sequence[str]) -> dict[str, float]:
    """Per key, the best value among the versions that have it (lowest for a cost)."""
    out: dict[str, float] = {}
    for k in keys:
        values = [v.metrics[k] for v in versions if k in v.metrics]
        if values:
            out[k] = min(values) if lower_is_better(k) else max(values)
    return out


@dataclass(frozen=True)
class Cell:
    value: float | None
    delta: float | None = None  # against production, when both have the key
    best: bool = False
    better: bool | None = None  # the delta's direction judged by the key (None: no delta)


@dataclass(frozen=True)
class CompareRow:
    version: dm.ModelVersion
    cells: list[Cell]
    is_production: bool


def compare_rows(comparison: dm.Comparison) -> list[CompareRow]:
    """One row per compared version, in the order asked: each key's value, its delta
    against production (from the domain's compare) and whether it is the column's best."""
    keys = comparison.metric_keys
    best = best_values(comparison.versions, keys)
    production = comparison.production.version if comparison.production else 0
    rows = []
    for v in comparison.versions:
        deltas = comparison.deltas.get(v.version, {})
        cells = []
        for k in keys:
            value = v.metrics.get(k)
            delta = deltas.get(k) if v.version != production else None
            better = None
            if delta is not None and delta != 0:
                better = (delta < 0) == lower_is_better(k)
            cells.append(Cell(value, delta, value is not None and best.get(k) == value, better))
        rows.append(CompareRow(v, cells, v.version == production))
    return rows


@dataclass(frozen=True)
class DiffRow:
    key: str
    before: Any
    after: Any
    change: str  # "added", "removed", "changed" or "same"


_MISSING = object()


def config_diff(base: dict[str, Any], config: dict[str, Any]) -> list[DiffRow]:
    """`config` against `base`, one row per key of either, in key order (nested values
    compare whole)."""
    rows = []
    for k in sorted(set(base) | set(config)):
        before, after = base.get(k, _MISSING), config.get(k, _MISSING)
        if before is _MISSING:
            rows.append(DiffRow(k, None, after, "added"))
        elif after is _MISSING:
            rows.append(DiffRow(k, before, None, "removed"))
        else:
            rows.append(DiffRow(k, before, after, "same" if before == after else "changed"))
    return rows


SORTABLE = ("version", "stage", "size", "creator", "time")


def sort_versions(versions: list[dm.ModelVersion], column: str, descending: bool) -> list[dm.ModelVersion]:
    """Sorts the shown page by a column: a fixed one (SORTABLE) or `metric:KEY`; versions
    without the metric go last either way."""

    def fixed(v: dm.ModelVersion) -> Any:
        return {
            "version": v.version,
            "stage": v.stage.value,
            "size": v.size_bytes,
            "creator": v.created_by,
            "time": v.create_time.timestamp() if v.create_time else 0,
        }[column]

    if column.startswith("metric:"):
        key = column[len("metric:") :]
        have = [v for v in versions if key in v.metrics]
        lacking = [v for v in versions if key not in v.metrics]
        return sorted(have, key=lambda v: v.metrics[key], reverse=descending) + lacking
    if column not in SORTABLE:
        column = "version"
    return sorted(versions, key=fixed, reverse=descending)


def matches(model: dm.Model, query: str) -> bool:
    """The Models page's search: every word of `query` is in the name, the project, or a
    tag's key or value (case-insensitive); `key=value` matches that tag exactly."""
    for word in query.lower().split():
        if "=" in word:
            k, _, val = word.partition("=")
            if not any(tk.lower() == k and tv.lower() == val for tk, tv in model.tags.items()):
                return False
            continue
        haystack = [model.name.lower(), (model.project or "default").lower()]
        haystack += [t.lower() for kv in model.tags.items() for t in kv]
        if not any(word in h for h in haystack):
            return False
    return True


def curves(versions: Sequence[dm.ModelVersion], metric: str) -> dict[str, Any]:
    """uPlot's aligned data for one metric's per-epoch history of each version: x is the
    union of the steps, one series per version that has the metric (null where a version
    has no point at a step)."""
    series = [(v.version, dict(v.metric_history[metric])) for v in versions if metric in v.metric_history]
    steps = sorted({s for _, points in series for s in points})
    return {
        "metric": metric,
        "labels": [f"v{n}" for n, _ in series],
        "data": [steps] + [[points.get(s) for s in steps] for _, points in series],
    }


def by_version(versions: Sequence[dm.ModelVersion], metric: str) -> dict[str, Any]:
    """One metric across versions, oldest first: x the version number."""
    have = sorted((v for v in versions if metric in v.metrics), key=lambda v: v.version)
    return {
        "metric": metric,
        "labels": [metric],
        "data": [[v.version for v in have], [v.metrics[metric] for v in have]],
    }
