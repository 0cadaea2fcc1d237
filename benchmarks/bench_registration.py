"""Goal 5: 16 clients registering small artifacts into one model at once.

Ours: RegisterModelVersion streaming 1 KiB of fresh random bytes each (sha256 declared and
verified, blob stored). Peer: MLflow `model-versions/create` (metadata only: MLflow does
not move the bytes in this call) through MlflowClient. Both then list the model's versions
and check they are exactly 1..N, one per successful call."""

from __future__ import annotations

from benchmarks.common import alternate, med, ratio, reps_detail
from benchmarks.report import Row

NAME = "registration"
GOALS = "5"


def run(env, cfg) -> list[Row]:
    per = cfg.reg_per_client
    checks: dict[str, list[str]] = {"ours": [], "mlflow": []}
    counter = {"ours": 0, "mlflow": 0}

    def ours() -> dict:
        counter["ours"] += 1
        model = f"bench-register-{counter['ours']}"
        r = env.load(
            {
                "op": "register",
                "target": env.ours,
                "model": model,
                "concurrency": cfg.clients,
                "count": per,
                "warmup_calls": 0,
                "size": 1024,
            },
            procs=cfg.ours_procs,
        )
        from modelreg import Client

        with Client(env.ours, actor="bench") as c:
            found = sorted(v.version for v in c.list_versions(model, page_size=1000))
        checks["ours"].append(_check(found, r["count"]))
        return r

    def mlflow(mode: str) -> dict:
        counter["mlflow"] += 1
        model = f"bench-register-{mode}-{counter['mlflow']}"
        env.mlflow_call("create_model", {"name": model})
        r = env.load(
            {"op": "create", "name": model, "mode": mode, "concurrency": cfg.clients, "count": per, "warmup_calls": 0},
            peer=True,
        )
        found = env.mlflow_call("versions", {"name": model})["versions"]
        checks["mlflow"].append(
            _check(found, r["count"])
            + (f"; {r['errors']} calls failed, e.g. {r['error_samples'][:1]}" if r["errors"] else "")
        )
        return r

    def floor() -> dict:
        return env.load(
            {
                "op": "sink",
                "target": env.floor,
                "concurrency": cfg.clients,
                "count": per,
                "warmup_calls": 0,
                "size": 1024,
            },
            procs=cfg.ours_procs,
        )

    subjects = {"ours": ours, "floor_stream": floor}
    if cfg.with_peer:
        subjects["mlflow_client"] = lambda: mlflow("client")
    res = alternate(cfg.reps, subjects)
    tput = {k: med(res, k, "throughput") for k in res}
    detail = {
        "throughput_per_rep": reps_detail(res, "throughput"),
        "checks": checks,
        "errors": {k: sum(r["errors"] for r in v) for k, v in res.items()},
        "calls_per_rep": cfg.clients * per,
    }
    ours_ok = all(c == "exactly 1..N" for c in checks["ours"])
    rows = [
        Row(
            goal="5",
            bench=NAME,
            figure=f"versions exactly 1..N after {cfg.clients} concurrent registrations",
            ours=1.0 if ours_ok else 0.0,
            ref_label="; ".join(sorted(set(checks["mlflow"]))) or "-",
            note="ours: " + "; ".join(sorted(set(checks["ours"]))),
            details=detail,
        )
    ]
    if cfg.with_peer:
        rows.insert(
            0,
            Row(
                goal="5",
                bench=NAME,
                figure=f"registration throughput, {cfg.clients} clients",
                ours=tput["ours"],
                unit="ver/s",
                ref=tput["mlflow_client"],
                ref_label="MLflow create_model_version",
                ratio=ratio(tput["ours"], tput["mlflow_client"]),
                ratio_of="ours/MLflow",
                target=(">=", 10),
                note="ours stores+verifies 1 KiB per version; MLflow's call moves no bytes",
                details=detail,
            ),
        )
        rows.insert(
            1,
            Row(
                goal="5",
                bench=NAME,
                figure=f"bare grpc.aio client stream (header + 1 KiB, no work) vs MLflow, {cfg.clients} clients",
                ours=tput["floor_stream"],
                unit="calls/s",
                ref=tput["mlflow_client"],
                ref_label="MLflow create_model_version",
                ratio=ratio(tput["floor_stream"], tput["mlflow_client"]),
                ratio_of="floor/MLflow",
                note="the ceiling for any registration that receives its bytes",
                details=detail,
            ),
        )
    else:
        rows.insert(
            0,
            Row(
                goal="5",
                bench=NAME,
                figure=f"registration throughput, {cfg.clients} clients",
                ours=tput["ours"],
                unit="ver/s",
                ref_label="peer skipped (--no-peer)",
                details=detail,
            ),
        )
    rows.insert(
        1,
        Row(
            goal="5",
            bench=NAME,
            figure=f"registration vs a bare grpc.aio client stream, {cfg.clients} clients",
            ours=tput["ours"],
            unit="ver/s",
            ref=tput["floor_stream"],
            ref_label="floor: same messages, no work",
            ratio=ratio(tput["ours"], tput["floor_stream"]),
            ratio_of="ours/floor",
            details=detail,
        ),
    )
    return rows


def _check(found: list[int], succeeded: int) -> str:
    if found == list(range(1, len(found) + 1)) and len(found) == succeeded:
        return "exactly 1..N"
    missing = sorted(set(range(1, succeeded + 1)) - set(found))
    return f"NOT 1..N: {len(found)} versions for {succeeded} successful calls, missing {missing[:5]}"
