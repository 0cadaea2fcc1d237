"""Goal 4: the write path. PromoteModelVersion p99 at 1 client, alternating two versions
into production (each promotion archives the other), next to a bare asyncpg transaction
doing the same writes (floors.promote_tx) and to MLflow's stage change
(`transition-stage` with archive_existing_versions) and alias change."""

from __future__ import annotations

from benchmarks import fixtures
from benchmarks.common import alternate, med, ratio, reps_detail
from benchmarks.report import Row

NAME = "promotion"
GOALS = "4"


def run(env, cfg) -> list[Row]:
    fixtures.ours_model(env, "bench-promote", 2, production=1)
    fixtures.ours_model(env, "bench-promote-floor", 2, production=1)
    count = cfg.promote_count
    names = [f"models/bench-promote/versions/{v}" for v in (1, 2)]
    subjects = {
        "ours_promote": lambda: env.load(
            {"op": "promote", "target": env.ours, "names": names, "concurrency": 1, "count": count}
        ),
        "floor_tx": lambda: _summ(
            env.floor_call(
                "promote_tx",
                {"database_url": env.ours_url, "model": "bench-promote-floor", "versions": [1, 2], "count": count},
            )
        ),
    }
    if cfg.with_peer:
        fixtures.mlflow_model(env, "bench-promote", 2, production=1)
        peer = {"concurrency": 1, "count": count, "name": "bench-promote", "versions": [1, 2]}
        subjects = {
            "ours_promote": subjects["ours_promote"],
            "mlflow_transition_client": lambda: env.load(dict(peer, op="transition", mode="client"), peer=True),
            "floor_tx": subjects["floor_tx"],
            "mlflow_transition_fresh": lambda: env.load(dict(peer, op="transition", mode="fresh"), peer=True),
            "mlflow_alias_client": lambda: env.load(dict(peer, op="alias", mode="client"), peer=True),
        }
    res = alternate(cfg.reps, subjects)
    p99 = {k: med(res, k, "p99_us") for k in res}
    p50 = {k: med(res, k, "p50_us") for k in res}
    detail = {
        "p99_us_per_rep": reps_detail(res, "p99_us"),
        "p50_us_per_rep": reps_detail(res, "p50_us"),
        "calls_per_rep": count,
    }
    rows = [
        Row(
            goal="4",
            bench=NAME,
            figure="promotion p99, 1 client",
            ours=p99["ours_promote"],
            unit="µs",
            ref=p99["floor_tx"],
            ref_label="bare asyncpg tx, same writes",
            ratio=ratio(p99["ours_promote"], p99["floor_tx"]),
            ratio_of="ours/floor",
            target=("<=", 2),
            note=f"p50 {p50['ours_promote']:.0f} vs {p50['floor_tx']:.0f} µs",
            details=detail,
        ),
    ]
    if cfg.with_peer:
        for key, label in (
            ("mlflow_transition_client", "MLflow transition-stage, MlflowClient"),
            ("mlflow_transition_fresh", "MLflow transition-stage, fresh conn"),
            ("mlflow_alias_client", "MLflow set alias, MlflowClient"),
        ):
            rows.append(
                Row(
                    goal="4",
                    bench=NAME,
                    figure="promotion p99 vs MLflow, 1 client",
                    ours=p99["ours_promote"],
                    unit="µs",
                    ref=p99[key],
                    ref_label=label,
                    ratio=ratio(p99["ours_promote"], p99[key]),
                    ratio_of="ours/MLflow",
                    target=("<=", 0.1),
                    details=detail,
                )
            )
    return rows


def _summ(raw: dict) -> dict:
    from benchmarks.stats import summarize

    return summarize(raw["latencies"], raw["elapsed_s"], raw["errors"])
