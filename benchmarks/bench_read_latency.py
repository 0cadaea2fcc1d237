"""Goal 2: GetModelVersion p50 at 1 client, next to its floor and to MLflow.

Floor = a bare grpc.aio empty unary call p50 + a bare asyncpg primary-key lookup p50
(both measured in this run). Peer = MLflow `model-versions/get` p50 through MlflowClient
(keep-alive) and with a fresh connection per request.
"""

from __future__ import annotations

from benchmarks import fixtures
from benchmarks.common import alternate, med, ratio, reps_detail
from benchmarks.report import Row

NAME = "read_latency"
GOALS = "2"
MODEL = "bench-read"


def run(env, cfg) -> list[Row]:
    n = 20
    fixtures.ours_model(env, MODEL, n, production=n // 2)
    name = f"models/{MODEL}/versions/{n // 2}"
    one = {"concurrency": 1, "duration": cfg.lat_duration}
    count = max(200, int(cfg.lat_duration * 2000))
    subjects = {
        "ours_get": lambda: env.load(dict(one, op="get", target=env.ours, names=[name])),
        "floor_empty_grpc": lambda: env.load(dict(one, op="empty", target=env.floor)),
        "floor_asyncpg_pk": lambda: _summ(
            env.floor_call("pg_lookup", {"database_url": env.ours_url, "key": f"{MODEL}/{n // 2}", "count": count})
        ),
    }
    if cfg.with_peer:
        fixtures.mlflow_model(env, MODEL, n, production=n // 2)
        peer = dict(one, op="get", keys=[[MODEL, n // 2]])
        subjects = {
            "ours_get": subjects["ours_get"],
            "mlflow_client": lambda: env.load(dict(peer, mode="client"), peer=True),
            "floor_empty_grpc": subjects["floor_empty_grpc"],
            "mlflow_fresh": lambda: env.load(dict(peer, mode="fresh"), peer=True),
            "floor_asyncpg_pk": subjects["floor_asyncpg_pk"],
            "mlflow_keepalive": lambda: env.load(dict(peer, mode="keepalive"), peer=True),
        }
    res = alternate(cfg.reps, subjects)
    p50 = {k: med(res, k, "p50_us") for k in res}
    floor = p50["floor_empty_grpc"] + p50["floor_asyncpg_pk"]
    detail = {"p50_us_per_rep": reps_detail(res, "p50_us"), "p99_us_per_rep": reps_detail(res, "p99_us")}
    rows = [
        Row(
            goal="2",
            bench=NAME,
            figure="GetModelVersion p50, 1 client",
            ours=p50["ours_get"],
            unit="µs",
            ref=floor,
            ref_label=f"floor: empty unary {p50['floor_empty_grpc']:.0f} + asyncpg PK {p50['floor_asyncpg_pk']:.0f}",
            ratio=ratio(p50["ours_get"], floor),
            ratio_of="ours/floor",
            target=("<=", 1.5),
            details=detail,
        ),
    ]
    if cfg.with_peer:
        for key, label in (
            ("mlflow_client", "MLflow get, MlflowClient"),
            ("mlflow_fresh", "MLflow get, fresh conn"),
            ("mlflow_keepalive", "MLflow get, raw keep-alive"),
        ):
            rows.append(
                Row(
                    goal="2",
                    bench=NAME,
                    figure="GetModelVersion p50 vs MLflow, 1 client",
                    ours=p50["ours_get"],
                    unit="µs",
                    ref=p50[key],
                    ref_label=label,
                    ratio=ratio(p50["ours_get"], p50[key]),
                    ratio_of="ours/MLflow",
                    target=("<=", 0.1),
                    details=detail,
                )
            )
    return rows


def _summ(raw: dict) -> dict:
    from benchmarks.stats import summarize

    return summarize(raw["latencies"], raw["elapsed_s"], raw["errors"])
