"""Goal 1: read throughput at 16 concurrent clients.

Ours: GetModelVersion by number (cycling over 20 versions) and resolving `production`
(`models/m/versions/production`), against a `modelreg server` process. Peer: MLflow's
`model-versions/get` through MlflowClient (keep-alive) and with a fresh connection per
request. Floors (context): a bare grpc.aio server doing one asyncpg primary-key lookup, and the same
server answering an empty call (no work at all: the ceiling of one grpc.aio process).
"""

from __future__ import annotations

from benchmarks import fixtures
from benchmarks.common import alternate, med, ratio, reps_detail
from benchmarks.report import Row

NAME = "read_throughput"
GOALS = "1"
MODEL = "bench-read"


def run(env, cfg) -> list[Row]:
    n = 20
    fixtures.ours_model(env, MODEL, n, production=n // 2)
    names = [f"models/{MODEL}/versions/{i}" for i in range(1, n + 1)]
    base = {"target": env.ours, "concurrency": cfg.clients, "duration": cfg.duration}
    subjects = {
        "ours_get": lambda: env.load(dict(base, op="get", names=names), procs=cfg.ours_procs),
        "ours_production": lambda: env.load(
            dict(base, op="get", names=[f"models/{MODEL}/versions/production"]), procs=cfg.ours_procs
        ),
        "floor_lookup": lambda: env.load(
            dict(base, op="lookup", target=env.floor, key=f"{MODEL}/{n // 2}"), procs=cfg.ours_procs
        ),
        "floor_empty": lambda: env.load(dict(base, op="empty", target=env.floor), procs=cfg.ours_procs),
    }
    if cfg.with_peer:
        fixtures.mlflow_model(env, MODEL, n, production=n // 2)
        keys = [[MODEL, i] for i in range(1, n + 1)]
        peer = {"op": "get", "keys": keys, "concurrency": cfg.clients, "duration": cfg.duration}
        # Peer and ours next to each other in the order.
        subjects = {
            "ours_get": subjects["ours_get"],
            "mlflow_client": lambda: env.load(dict(peer, mode="client"), peer=True),
            "ours_production": subjects["ours_production"],
            "mlflow_fresh": lambda: env.load(dict(peer, mode="fresh"), peer=True),
            "floor_lookup": subjects["floor_lookup"],
            "floor_empty": subjects["floor_empty"],
        }
    res = alternate(cfg.reps, subjects)
    tput = {k: med(res, k, "throughput") for k in res}
    detail = {
        "throughput_per_rep": reps_detail(res, "throughput"),
        "errors": {k: sum(r["errors"] for r in v) for k, v in res.items()},
    }
    fig = f"{cfg.clients} clients"
    rows: list[Row] = []
    for ours_key, what in (("ours_get", "GetModelVersion by number"), ("ours_production", "resolve production")):
        if cfg.with_peer:
            for peer_key, label in (
                ("mlflow_client", "MLflow get, MlflowClient"),
                ("mlflow_fresh", "MLflow get, fresh conn"),
            ):
                rows.append(
                    Row(
                        goal="1",
                        bench=NAME,
                        figure=f"{what} throughput, {fig}",
                        ours=tput[ours_key],
                        unit="req/s",
                        ref=tput[peer_key],
                        ref_label=label,
                        ratio=ratio(tput[ours_key], tput[peer_key]),
                        ratio_of="ours/MLflow",
                        target=(">=", 20),
                        details=detail,
                    )
                )
        else:
            rows.append(
                Row(
                    goal="1",
                    bench=NAME,
                    figure=f"{what} throughput, {fig}",
                    ours=tput[ours_key],
                    unit="req/s",
                    ref_label="peer skipped (--no-peer)",
                    details=detail,
                )
            )
        rows.append(
            Row(
                goal="1",
                bench=NAME,
                figure=f"{what} vs bare grpc.aio+asyncpg lookup, {fig}",
                ours=tput[ours_key],
                unit="req/s",
                ref=tput["floor_lookup"],
                ref_label="floor",
                ratio=ratio(tput[ours_key], tput["floor_lookup"]),
                ratio_of="ours/floor",
                details=detail,
            )
        )
    rows.append(
        Row(
            goal="1",
            bench=NAME,
            figure=f"GetModelVersion by number vs bare grpc.aio empty call, {fig}",
            ours=tput["ours_get"],
            unit="req/s",
            ref=tput["floor_empty"],
            ref_label="floor: no work at all",
            ratio=ratio(tput["ours_get"], tput["floor_empty"]),
            ratio_of="ours/floor",
            note="ceiling of one grpc.aio process here",
            details=detail,
        )
    )
    if cfg.with_peer:
        rows.append(
            Row(
                goal="1",
                bench=NAME,
                figure=f"bare grpc.aio empty call vs MLflow get, {fig}",
                ours=tput["floor_empty"],
                unit="req/s",
                ref=tput["mlflow_client"],
                ref_label="MLflow get, MlflowClient",
                ratio=ratio(tput["floor_empty"], tput["mlflow_client"]),
                ratio_of="floor/MLflow",
                note="even zero work per request",
                details=detail,
            )
        )
        rows.append(
            Row(
                goal="1",
                bench=NAME,
                figure=f"bare grpc.aio+asyncpg lookup vs MLflow get, {fig}",
                ours=tput["floor_lookup"],
                unit="req/s",
                ref=tput["mlflow_client"],
                ref_label="MLflow get, MlflowClient",
                ratio=ratio(tput["floor_lookup"], tput["mlflow_client"]),
                ratio_of="floor/MLflow",
                note="the floor's own head-room",
                details=detail,
            )
        )
    return rows
