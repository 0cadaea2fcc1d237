"""`python -m benchmarks [--only NAME] [--quick] [--no-peer]`: runs the benchmarks, prints
one table and writes the same as JSON (benchmarks/results/latest.json by default)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from benchmarks.env import BENCH_DIR, BenchEnv, log
from benchmarks.report import Row, table, write_json

# Order of the table. Each module exposes NAME, GOALS and run(env, cfg) -> list[Row].
MODULES = [
    "benchmarks.bench_read_throughput",
    "benchmarks.bench_read_latency",
    "benchmarks.bench_history",
    "benchmarks.bench_promotion",
    "benchmarks.bench_gates",
    "benchmarks.bench_registration",
    "benchmarks.bench_events",
    "benchmarks.bench_transfer",
    "benchmarks.bench_s3",
    "benchmarks.bench_agent",
    "benchmarks.bench_oip",
    "benchmarks.bench_swaps",
    "benchmarks.bench_router",
    "benchmarks.bench_metrics",
    "benchmarks.bench_tracing",
    "benchmarks.bench_console",
    "benchmarks.bench_auth",
]


@dataclass(frozen=True)
class Config:
    quick: bool
    with_peer: bool
    reps: int  # repetitions of each subject, peer and ours alternating; medians quoted
    duration: float  # seconds of one throughput window
    lat_duration: float  # seconds of one 1-client latency window
    clients: int  # concurrent clients for the throughput goals
    ours_procs: int  # load-generator processes for our server
    history_small: int
    history_big: int
    promote_count: int
    reg_per_client: int
    big_bytes: int


def config(quick: bool, with_peer: bool) -> Config:
    if quick:
        return Config(
            quick,
            with_peer,
            reps=1,
            duration=0.5,
            lat_duration=0.3,
            clients=16,
            ours_procs=1,
            history_small=20,
            history_big=100,
            promote_count=20,
            reg_per_client=2,
            big_bytes=16 << 20,
        )
    return Config(
        quick,
        with_peer,
        reps=3,
        duration=3.0,
        lat_duration=2.0,
        clients=16,
        ours_procs=1,
        history_small=20,
        history_big=2000,
        promote_count=200,
        reg_per_client=20,
        big_bytes=2 << 30,
    )


def _revision() -> dict:
    """The commit measured, and whether the server/agent code differed from it (a shared tree)."""
    import subprocess

    from benchmarks.env import REPO

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    dirty = git("status", "--porcelain", "--", "registry_server", "serving_agent", "clients")
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_changes": dirty.splitlines()}


def modules():
    return [importlib.import_module(m) for m in MODULES]


def main(argv: list[str] | None = None) -> int:
    mods = modules()
    names = [m.NAME for m in mods]
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--only", choices=names, help="run one benchmark")
    p.add_argument("--quick", action="store_true", help="tiny sizes and windows (smoke runs, not figures)")
    p.add_argument("--no-peer", dest="peer", action="store_false", help="skip the MLflow peer (no venv created)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "latest.json", help="where the JSON goes")
    args = p.parse_args(argv)
    cfg = config(args.quick, args.peer)
    selected = [m for m in mods if args.only in (None, m.NAME)]

    load_before = os.getloadavg()
    revision = _revision()
    env = BenchEnv(quick=args.quick, with_peer=args.peer)
    rows: list[Row] = []
    failures: dict[str, str] = {}
    t0 = time.time()
    try:
        for m in selected:
            log(f"running {m.NAME} (goal {m.GOALS})")
            started, mark = time.time(), len(env.servers)
            try:
                rows += [r.evaluate() for r in m.run(env, cfg)]
            except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others
                traceback.print_exc()
                failures[m.NAME] = f"{type(e).__name__}: {e}"
                rows.append(Row(goal=m.GOALS, bench=m.NAME, figure=m.NAME, note=f"benchmark failed: {e}"[:200]))
            finally:
                env.stop_servers_since(mark)
            log(f"{m.NAME} took {time.time() - started:.1f}s")
    finally:
        env.close()
    print(table(rows))
    meta = {
        "revision": revision,
        "quick": cfg.quick,
        "peer": "mlflow server (MLflow 3, 1 worker)" if cfg.with_peer else None,
        "config": cfg.__dict__,
        "wall_s": round(time.time() - t0, 1),
        # Other work on the machine skews figures: the 1-minute load average before and after.
        "loadavg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "failures": failures,
    }
    print(
        f"\n1-minute load average before/after: {meta['loadavg_1m'][0]} / {meta['loadavg_1m'][1]} "
        f"on {os.cpu_count()} CPUs; ratios are the result, absolute times are context"
    )
    dirty = f" plus uncommitted {', '.join(revision['uncommitted_changes'])}" if revision["uncommitted_changes"] else ""
    print(f"measured commit {revision['commit']}{dirty}")
    write_json(args.out, rows, meta)
    print(f"\nwrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
