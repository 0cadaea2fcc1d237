"""Goal 9: zero-drop swaps. A `modelreg agent` serves a tiny ONNX model to 8 concurrent
Predict clients while the harness promotes the other version every 150 ms, alternating
(promote, then roll back: one cycle), for 100 cycles. Figures: failed requests during the
swaps (goal 0), request rate during the swaps (goal ≥ 1,000/s) and p99 during the swaps vs
p99 of the same load with no swaps, measured just before (goal ≤ 1.5×)."""

from __future__ import annotations

import threading
import time

from benchmarks.bench_agent import Agents, onnx_model
from benchmarks.common import ratio
from benchmarks.env import log
from benchmarks.report import Row, not_measurable

NAME = "swaps"
GOALS = "9"
MODEL = "bench-swap"
GAP = 0.15


def run(env, cfg) -> list[Row]:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return [not_measurable("9", NAME, "zero-drop swaps", f"onnx and onnxruntime ({e})")]
    from modelreg import Client

    cycles = 5 if cfg.quick else 100
    with Client(env.ours, actor="bench") as c:
        a = c.register(MODEL, onnx_model(16, 101), format="onnx", filename="model.onnx").version
        b = c.register(MODEL, onnx_model(16, 102), format="onnx", filename="model.onnx").version
        c.promote(MODEL, a, "production", reason="bench seed")
    agents = Agents(env, [MODEL])
    agents.add(1)
    load = {"op": "predict", "target": agents.addresses[0], "model": MODEL, "concurrency": 8, "count_versions": True}
    steady = env.load(dict(load, duration=max(1.0, cfg.duration * 2)))
    window = cycles * 2 * GAP + 1.0
    holder: dict = {}
    t = threading.Thread(target=lambda: holder.update(r=env.load(dict(load, duration=window))))
    t.start()
    time.sleep(1.0)  # the load generator starts and warms up
    done = 0
    with Client(env.ours, actor="bench") as c:
        for _ in range(cycles):
            for v in (b, a):
                c.promote(MODEL, v, "production", reason="bench swap")
                time.sleep(GAP)
            done += 1
    t.join()
    swaps = holder["r"]
    served = {k.removeprefix("served "): n for k, n in swaps["extra"].items() if k.startswith("served ")}
    log(f"  swaps: {swaps['throughput']:.0f} req/s, {swaps['errors']} failed, served {served}")
    detail = {
        "cycles": done,
        "gap_s": GAP,
        "served": served,
        "steady": {k: steady[k] for k in ("throughput", "p50_us", "p99_us")},
        "swaps": {k: swaps[k] for k in ("throughput", "p50_us", "p99_us", "errors")},
        "error_samples": swaps.get("error_samples", []),
    }
    both = f"both versions served ({', '.join(f'{k}: {n}' for k, n in sorted(served.items()))})"
    return [
        Row(
            goal="9",
            bench=NAME,
            figure=f"failed requests across {done} promote/rollback cycles, 8 clients",
            ours=float(swaps["errors"]),
            unit="req",
            target=("<=", 0),
            goal_on="ours",
            note=both,
            details=detail,
        ),
        Row(
            goal="9",
            bench=NAME,
            figure="request rate through the agent during the swaps",
            ours=swaps["throughput"],
            unit="req/s",
            target=(">=", 1000),
            goal_on="ours",
            details=detail,
        ),
        Row(
            goal="9",
            bench=NAME,
            figure="p99 during the swaps vs steady p99",
            ours=swaps["p99_us"] / 1000,
            unit="ms",
            ref=steady["p99_us"] / 1000,
            ref_label="same load, no swaps",
            ratio=ratio(swaps["p99_us"], steady["p99_us"]),
            ratio_of="swaps/steady",
            target=("<=", 1.5),
            details=detail,
        ),
    ]
