"""Goal 3: resolving `production` must not cost more as a model's history grows.

Ours: GetModelVersion(`models/m/versions/production`) p50 at 1 client on a model with 2,000
versions and on one with 20 (production is a version in the middle). Peer: MLflow
`registered-models/get-latest-versions` (stage Production) p50 on its 2,000-version model,
through MlflowClient and with a fresh connection; its 20-version model as context.
"""

from __future__ import annotations

from benchmarks import fixtures
from benchmarks.common import alternate, med, ratio, reps_detail
from benchmarks.report import Row

NAME = "history"
GOALS = "3"


def run(env, cfg) -> list[Row]:
    small, big = cfg.history_small, cfg.history_big
    m_small, m_big = f"bench-hist-{small}", f"bench-hist-{big}"
    fixtures.ours_model(env, m_small, small, production=small // 2)
    fixtures.ours_model(env, m_big, big, production=big // 2)
    one = {"concurrency": 1, "duration": cfg.lat_duration, "op": "get", "target": env.ours}
    subjects = {
        "ours_big": lambda: env.load(dict(one, names=[f"models/{m_big}/versions/production"])),
        "ours_small": lambda: env.load(dict(one, names=[f"models/{m_small}/versions/production"])),
    }
    if cfg.with_peer:
        fixtures.mlflow_model(env, m_small, small, production=small // 2)
        fixtures.mlflow_model(env, m_big, big, production=big // 2)
        peer = {"concurrency": 1, "duration": cfg.lat_duration, "op": "latest"}
        subjects = {
            "ours_big": subjects["ours_big"],
            "mlflow_big_client": lambda: env.load(dict(peer, name=m_big, mode="client"), peer=True),
            "ours_small": subjects["ours_small"],
            "mlflow_big_fresh": lambda: env.load(dict(peer, name=m_big, mode="fresh"), peer=True),
            "mlflow_small_client": lambda: env.load(dict(peer, name=m_small, mode="client"), peer=True),
        }
    res = alternate(cfg.reps, subjects)
    p50 = {k: med(res, k, "p50_us") for k in res}
    detail = {"p50_us_per_rep": reps_detail(res, "p50_us")}
    rows = [
        Row(
            goal="3",
            bench=NAME,
            figure=f"resolve production p50, {big} vs {small} versions",
            ours=p50["ours_big"],
            unit="µs",
            ref=p50["ours_small"],
            ref_label=f"ours, {small} versions",
            ratio=ratio(p50["ours_big"], p50["ours_small"]),
            ratio_of=f"{big}/{small}",
            target=("<=", 1.2),
            details=detail,
        ),
    ]
    if cfg.with_peer:
        for key, label in (
            ("mlflow_big_client", "MLflow get-latest-versions, MlflowClient"),
            ("mlflow_big_fresh", "MLflow get-latest-versions, fresh conn"),
        ):
            rows.append(
                Row(
                    goal="3",
                    bench=NAME,
                    figure=f"resolve production p50 vs MLflow, {big} versions",
                    ours=p50["ours_big"],
                    unit="µs",
                    ref=p50[key],
                    ref_label=label,
                    ratio=ratio(p50[key], p50["ours_big"]),
                    ratio_of="MLflow/ours",
                    target=(">=", 50),
                    details=detail,
                )
            )
        rows.append(
            Row(
                goal="3",
                bench=NAME,
                figure=f"MLflow get-latest-versions p50, {big} vs {small} versions",
                ours=None,
                unit="µs",
                ref=p50["mlflow_big_client"],
                ref_label=f"MLflow, {big} versions",
                ratio=ratio(p50["mlflow_big_client"], p50["mlflow_small_client"]),
                ratio_of=f"{big}/{small}",
                note=f"MLflow {small} versions: {p50['mlflow_small_client']:.0f} µs",
                details=detail,
            )
        )
    return rows
