"""Goal 12: the canary router, measured on the serving agent's own code.

`ModelManager.lease(key)` (route + lease bookkeeping) with a stable and a canary version
both READY and the canary at 10 %, against the floor: the same lease with only a stable
version (no canary decision). Cost per request = (routed − floor) per call, median of the
repetitions, 100,000 calls each. Realized split: the share of 100,000 requests routed to
the canary, without routing keys (random buckets) and with 100,000 distinct routing keys
(sticky hashed buckets), vs the weight.
"""

from __future__ import annotations

import time

from benchmarks.report import Row, not_measurable
from benchmarks.stats import median

NAME = "router"
GOALS = "12"
WEIGHT = 10


def _manager(canary: bool):
    from serving_agent.manager import ManagedVersion, ModelManager
    from serving_agent.metrics import Metrics
    from serving_agent.policy import State
    from serving_agent.spec import Desired, VersionSpec

    class Hooks:  # what the agent gives its managers; routing uses none of it
        metrics = Metrics()
        keep_warm = 0

        def changed(self) -> None:
            pass

    m = ModelManager("bench", Hooks())
    stable = VersionSpec(model="bench", version=1, sha256="a" * 64)
    can = VersionSpec(model="bench", version=2, sha256="b" * 64)
    m.set_desired(Desired(stable=stable, canary=can if canary else None, weight=WEIGHT if canary else 0))
    for v in m.versions.values():
        v.state = State.READY
    m.versions.setdefault(2, ManagedVersion(spec=can, state=State.READY))
    return m


def _per_call(m, n: int, keys: list[str] | None) -> float:
    lease = m.lease
    t0 = time.perf_counter()
    if keys is None:
        for _ in range(n):
            with lease():
                pass
    else:
        for k in keys:
            with lease(k):
                pass
    return (time.perf_counter() - t0) / n


def run(env, cfg) -> list[Row]:
    try:
        _manager(True)
    except Exception as e:  # noqa: BLE001 - the agent's internals moved
        return [
            not_measurable("12", NAME, "canary router cost and split", f"serving_agent.manager as benchmarked ({e})")
        ]
    n = 10_000 if cfg.quick else 100_000
    keys = [f"user-{i}" for i in range(n)]
    routed, floor, routed_keys, floor_keys = [], [], [], []
    for _ in range(cfg.reps):
        routed.append(_per_call(_manager(True), n, None))
        floor.append(_per_call(_manager(False), n, None))
        routed_keys.append(_per_call(_manager(True), n, keys))
        floor_keys.append(_per_call(_manager(False), n, keys))
    m = _manager(True)
    share = sum(m.route().version == 2 for _ in range(n)) / n * 100
    share_keys = sum(m.route(k).version == 2 for k in keys) / n * 100
    added = (median(routed) - median(floor)) * 1e6
    added_keys = (median(routed_keys) - median(floor_keys)) * 1e6
    detail = {
        "calls": n,
        "weight": WEIGHT,
        "routed_us": [x * 1e6 for x in routed],
        "floor_us": [x * 1e6 for x in floor],
        "routed_keys_us": [x * 1e6 for x in routed_keys],
        "floor_keys_us": [x * 1e6 for x in floor_keys],
    }
    return [
        Row(
            goal="12",
            bench=NAME,
            figure="lease with canary routing at 10 %, no routing key",
            ours=median(routed) * 1e6,
            unit="µs",
            ref=median(floor) * 1e6,
            ref_label="lease without a canary",
            target=("<=", 2),
            goal_on="diff",
            note=f"router adds {added:.2f} µs",
            details=detail,
        ),
        Row(
            goal="12",
            bench=NAME,
            figure="lease with canary routing at 10 %, sticky routing keys",
            ours=median(routed_keys) * 1e6,
            unit="µs",
            ref=median(floor_keys) * 1e6,
            ref_label="lease without a canary",
            target=("<=", 2),
            goal_on="diff",
            note=f"router adds {added_keys:.2f} µs (sha256 of the key)",
            details=detail,
        ),
        Row(
            goal="12",
            bench=NAME,
            figure=f"realized canary share over {n:,} requests, no key (weight {WEIGHT})",
            ours=share,
            unit="%",
            ref=float(WEIGHT),
            ref_label="weight",
            ratio=abs(share - WEIGHT),
            ratio_of="points off the weight",
            target=("<=", 1),
            details=detail,
        ),
        Row(
            goal="12",
            bench=NAME,
            figure=f"realized canary share over {n:,} distinct routing keys (weight {WEIGHT})",
            ours=share_keys,
            unit="%",
            ref=float(WEIGHT),
            ref_label="weight",
            ratio=abs(share_keys - WEIGHT),
            ratio_of="points off the weight",
            target=("<=", 1),
            details=detail,
        ),
    ]
