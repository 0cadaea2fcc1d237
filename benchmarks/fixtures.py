"""Seeded models shared by the benchmarks, created once per run on each side."""

from __future__ import annotations

from benchmarks.env import BenchEnv, log


def _split(n: int) -> tuple[int, int]:
    """(clients, calls per client) with clients * calls == n."""
    for c in (16, 8, 4, 2, 1):
        if n % c == 0:
            return c, n // c
    return 1, n


def ours_model(env: BenchEnv, name: str, n: int, production: int | None = None) -> str:
    """A model on our server with versions 1..n of 1 KiB artifacts; `production` promoted."""
    key = ("ours", name)
    if key not in env.cache:
        clients, per = _split(n)
        log(f"seeding our {name}: {n} versions")
        r = env.load(
            {
                "op": "register",
                "target": env.ours,
                "model": name,
                "concurrency": clients,
                "count": per,
                "warmup_calls": 0,
                "size": 1024,
            }
        )
        if r["errors"] or r["count"] != n:
            raise RuntimeError(f"seeding {name} registered {r['count']} of {n}: {r['error_samples']}")
        if production:
            from modelreg import Client

            with Client(env.ours, actor="bench") as c:
                c.promote(name, production, "production", reason="bench seed")
        env.cache[key] = name
    return env.cache[key]


def mlflow_model(env: BenchEnv, name: str, n: int, production: int | None = None) -> str:
    """The same shape on the peer: a registered model with versions 1..n, `production` in
    the Production stage and aliased `production`."""
    key = ("mlflow", name)
    if key not in env.cache:
        log(f"seeding MLflow {name}: {n} versions")
        r = env.mlflow_call("seed", {"name": name, "n": n, "production_version": production, "concurrency": 1})
        if r["versions"] != n:
            raise RuntimeError(f"seeding MLflow {name} created {r['versions']} of {n} versions: {r['failures']}")
        env.cache[key] = name
    return env.cache[key]
