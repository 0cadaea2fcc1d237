"""Issue 12's speed goal: evaluating a gate policy adds at most 1 ms to promotion p50.

Two models on our server with the same two versions (carrying metrics), alternated into
production one client at a time; one model has a production gate policy of three metric
checks (min, max-drop, max) that every promotion passes, the other none. The figure is the
gated p50 minus the ungated p50, measured side by side in the same run."""

from __future__ import annotations

from benchmarks.common import alternate, med, reps_detail
from benchmarks.report import Row

NAME = "gates"
GOALS = "12"
PLAIN, GATED = "bench-gate-off", "bench-gate-on"


def _seed(env) -> None:
    if ("ours", GATED) in env.cache:
        return
    from modelreg import Client
    from modelreg.v1 import governance_pb2 as gv
    from modelreg.v1 import governance_service_pb2 as gs
    from modelreg.v1 import governance_service_pb2_grpc as gs_grpc

    with Client(env.ours, actor="bench") as c:
        for model in (PLAIN, GATED):
            for i, m in enumerate((0.71, 0.72), start=1):
                c.register(model, f"{model}-{i}".encode() * 64, metrics={"map50": m, "latency_ms": 9.0 + i})
            c.promote(model, 1, "production", reason="bench seed")
        T = gv.GateCheckType
        policy = gv.GatePolicy(
            target="production",
            checks=[
                gv.GateCheck(type=T.GATE_CHECK_TYPE_MIN, metric="map50", value=0.5),
                gv.GateCheck(type=T.GATE_CHECK_TYPE_MAX_DROP, metric="map50", value=0.05),
                gv.GateCheck(type=T.GATE_CHECK_TYPE_MAX, metric="latency_ms", value=50),
            ],
        )
        gs_grpc.GovernanceServiceStub(c._channel).SetGatePolicy(
            gs.SetGatePolicyRequest(model=f"models/{GATED}", policy=policy), timeout=30
        )
    env.cache[("ours", GATED)] = GATED


def run(env, cfg) -> list[Row]:
    _seed(env)
    count = cfg.promote_count

    def promote(model: str):
        names = [f"models/{model}/versions/{v}" for v in (1, 2)]
        return lambda: env.load({"op": "promote", "target": env.ours, "names": names, "concurrency": 1, "count": count})

    res = alternate(cfg.reps, {"gated": promote(GATED), "plain": promote(PLAIN)})
    p50 = {k: med(res, k, "p50_us") for k in res}
    p99 = {k: med(res, k, "p99_us") for k in res}
    return [
        Row(
            goal="12",
            bench=NAME,
            figure="promotion p50 with a 3-check gate policy, 1 client",
            ours=p50["gated"],
            unit="µs",
            ref=p50["plain"],
            ref_label="same promotion, no policy",
            ratio=p50["gated"] / p50["plain"] if p50["plain"] else None,
            ratio_of="gated/plain",
            target=("<=", 1000),
            goal_on="diff",
            note=f"adds {p50['gated'] - p50['plain']:.0f} µs at p50 (goal <= 1000 µs); p99 {p99['gated']:.0f} vs "
            f"{p99['plain']:.0f} µs",
            details={"p50_us_per_rep": reps_detail(res, "p50_us"), "calls_per_rep": count},
        )
    ]
