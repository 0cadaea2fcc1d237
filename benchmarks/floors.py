"""The floors: what the bare parts cost with nothing of ours on top.

Run as subprocesses by the harness (`python -m benchmarks.floors MODE SPEC_JSON`):
  server      a bare grpc.aio server (generic handlers, no protobuf) with three methods:
              /bench.Floor/Empty (returns nothing), /bench.Floor/Lookup (one asyncpg
              primary-key lookup on model_versions, from a pool that skips asyncpg's reset
              query on release) and /bench.Floor/Sink (a client stream read to its end,
              nothing done with it). Prints its port, serves until killed.
  pg_lookup   sequential asyncpg primary-key lookups on one connection (prepared statement).
  promote_tx  a bare asyncpg transaction doing the same writes as a promotion.
  notify      the same writes with NOTIFY on a private channel, until a LISTENer has it.
  ort         onnxruntime in-process: session creation, warm-up and run latency.
  file_read   reads a file in 1 MiB chunks (raw, and raw + sha256).
Each measuring mode prints one JSON object like the load generators.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time

import asyncpg
import grpc

from registry_server.storage import db

LOOKUP_SQL = "SELECT * FROM model_versions WHERE model = $1 AND version = $2"


async def serve(spec: dict) -> None:
    async def no_reset(conn) -> None:
        # asyncpg's default reset runs "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
        # RESET ALL" on every release: a second round trip per request. A bare floor skips it.
        return None

    pool = await asyncpg.create_pool(
        **db.connect_kwargs(spec["database_url"]), min_size=2, max_size=20, reset=no_reset, statement_cache_size=256
    )

    async def empty(request: bytes, context) -> bytes:
        return b""

    async def lookup(request: bytes, context) -> bytes:
        model, _, version = request.decode().rpartition("/")
        row = await pool.fetchrow(LOOKUP_SQL, model, int(version))
        return row["sha256"].encode() if row else b""

    async def sink(requests, context) -> bytes:
        async for _ in requests:
            pass
        return b""

    handler = grpc.method_handlers_generic_handler(
        "bench.Floor",
        {
            "Empty": grpc.unary_unary_rpc_method_handler(empty),
            "Lookup": grpc.unary_unary_rpc_method_handler(lookup),
            "Sink": grpc.stream_unary_rpc_method_handler(sink),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def pg_lookup(spec: dict) -> dict:
    conn = await db.connect(spec["database_url"])
    model, _, version = spec["key"].rpartition("/")
    stmt = await conn.prepare(LOOKUP_SQL)
    for _ in range(20):
        await stmt.fetchrow(model, int(version))
    latencies = []
    t0 = time.perf_counter()
    for _ in range(spec["count"]):
        s = time.perf_counter()
        # conn.fetchrow goes through the statement cache, like the registry's pool does.
        await conn.fetchrow(LOOKUP_SQL, model, int(version))
        latencies.append(time.perf_counter() - s)
    elapsed = time.perf_counter() - t0
    await conn.close()
    return {"latencies": latencies, "errors": 0, "elapsed_s": elapsed, "extra": {}}


async def _has_deployments(conn) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('deployments') IS NOT NULL"))


async def _promote_once(
    conn, model: str, number: int, channel: str = "modelreg_events", deployments: bool = False
) -> None:
    """The writes a promotion to production makes (archive the current one, move the
    pointer, the outbox events, NOTIFY, stage history and, once deployments exist, the
    deployment row and its history), with the same row locks and nothing else around them."""
    async with conn.transaction():
        mrow = await conn.fetchrow(
            "SELECT name, production_version, last_version FROM models WHERE name = $1 FOR UPDATE", model
        )
        revision = 0
        if deployments:
            await conn.execute("INSERT INTO deployments (model) VALUES ($1) ON CONFLICT DO NOTHING", model)
            revision = await conn.fetchval("SELECT revision FROM deployments WHERE model = $1 FOR UPDATE", model)
        await conn.fetchrow(
            "SELECT stage FROM model_versions WHERE model = $1 AND version = $2 FOR UPDATE", model, number
        )
        previous = mrow["production_version"]
        if previous and previous != number:
            await conn.fetchrow(
                "UPDATE model_versions SET stage = 'archived', updated_at = now()"
                " WHERE model = $1 AND version = $2 RETURNING *",
                model,
                previous,
            )
        await conn.fetchrow(
            "UPDATE model_versions SET stage = $3, updated_at = now() WHERE model = $1 AND version = $2 RETURNING *",
            model,
            number,
            "production",
        )
        await conn.execute(
            "UPDATE models SET production_version = $2, updated_at = now() WHERE name = $1", model, number
        )
        state = {"stable_version": number, "canary_version": 0, "canary_weight": 0, "revision": revision + 1}
        if deployments:
            await conn.execute(
                "UPDATE deployments SET canary_version = 0, canary_weight = 0, revision = $2, updated_by = $3,"
                " updated_at = now() WHERE model = $1",
                model,
                revision + 1,
                "bench",
            )
        n = 3 if deployments else 2
        last = await conn.fetchval("UPDATE event_sequence SET last = last + $1 WHERE id = 1 RETURNING last", n)
        first = last - n + 1
        events = [
            (first, "STAGE_CHANGED", model, previous or 0, "production", "archived", "bench", "floor", {}),
            (first + 1, "STAGE_CHANGED", model, number, "archived", "production", "bench", "floor", {}),
        ]
        if deployments:
            events.append((first + 2, "DEPLOYMENT_CHANGED", model, number, "", "", "bench", "floor", state))
        await conn.executemany(
            "INSERT INTO events (sequence, type, model, version, from_stage, to_stage, actor, reason, details)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            events,
        )
        await conn.execute("SELECT pg_notify($1, $2)", channel, str(last))
        await conn.executemany(
            "INSERT INTO stage_transitions (model, version, from_stage, to_stage, actor, reason, sequence)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (model, previous or 0, "production", "archived", "bench", "floor", first),
                (model, number, "archived", "production", "bench", "floor", first + 1),
            ],
        )
        if deployments:
            await conn.executemany(
                "INSERT INTO deployment_history (model, revision, action, actor, reason, before, after, sequence)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                [
                    (
                        model,
                        revision + 1,
                        "PROMOTE",
                        "bench",
                        "floor",
                        dict(state, stable_version=previous or 0),
                        state,
                        last,
                    )
                ],
            )


async def promote_tx(spec: dict) -> dict:
    conn = await db.connect(spec["database_url"])
    model, versions = spec["model"], spec["versions"]
    dep = await _has_deployments(conn)
    for i in range(10):
        await _promote_once(conn, model, versions[i % len(versions)], deployments=dep)
    latencies = []
    t0 = time.perf_counter()
    for i in range(spec["count"]):
        s = time.perf_counter()
        await _promote_once(conn, model, versions[i % len(versions)], deployments=dep)
        latencies.append(time.perf_counter() - s)
    elapsed = time.perf_counter() - t0
    await conn.close()
    return {"latencies": latencies, "errors": 0, "elapsed_s": elapsed, "extra": {}}


async def notify(spec: dict) -> dict:
    """The promotion's writes with NOTIFY on a private channel, timed from the start of the
    transaction to the notification arriving at a LISTENing connection."""
    writer = await db.connect(spec["database_url"])
    listener = await db.connect(spec["database_url"])
    arrived: asyncio.Queue[float] = asyncio.Queue()
    await listener.add_listener("bench_floor", lambda *args: arrived.put_nowait(time.perf_counter()))
    model, versions = spec["model"], spec["versions"]
    dep = await _has_deployments(writer)
    latencies = []
    t0 = time.perf_counter()
    for i in range(spec["count"] + 5):
        s = time.perf_counter()
        await _promote_once(writer, model, versions[i % len(versions)], channel="bench_floor", deployments=dep)
        got = await asyncio.wait_for(arrived.get(), 10)
        if i >= 5:
            latencies.append(got - s)
        await asyncio.sleep(spec.get("gap", 0.02))
    elapsed = time.perf_counter() - t0
    await writer.close()
    await listener.close()
    return {"latencies": latencies, "errors": 0, "elapsed_s": elapsed, "extra": {}}


def ort(spec: dict) -> dict:
    """onnxruntime in-process with the agent's session options: session creation (median
    of 3), the first run (warm-up), then sequential runs on zeros of `input` = [name, shape]
    (default x = float32 [1, 4]); `count` runs or `duration` seconds, whichever ends first.
    The process gets the agent process's malloc tuning too, so the two differ only in the
    sidecar's own work (gRPC, tensor decoding), not in how freed pages are reused."""
    import numpy as np
    import onnxruntime

    from modelreg_runtime.process import keep_freed_memory
    from serving_agent.server import AGENT_MALLOC

    keep_freed_memory(**AGENT_MALLOC)

    created = []
    for _ in range(3):
        t0 = time.perf_counter()
        session = onnxruntime.InferenceSession(
            spec["path"], sess_options=onnxruntime.SessionOptions(), providers=["CPUExecutionProvider"]
        )
        created.append(time.perf_counter() - t0)
    name, shape = spec.get("input", ["x", [1, 4]])
    x = {name: np.zeros(shape, np.float32)}
    t0 = time.perf_counter()
    session.run(None, x)
    warmup = time.perf_counter() - t0
    latencies = []
    start = time.perf_counter()
    stop = start + spec.get("duration", 1e9)
    for _ in range(spec.get("count", 2000)):
        if time.perf_counter() > stop:
            break
        s = time.perf_counter()
        session.run(None, x)
        latencies.append(time.perf_counter() - s)
    elapsed = time.perf_counter() - start
    return {
        "latencies": latencies,
        "errors": 0,
        "elapsed_s": elapsed,
        "extra": {"session_s": sorted(created)[1], "warmup_s": warmup},
    }


def file_read(spec: dict) -> dict:
    chunk = spec.get("chunk_size", 1 << 20)
    out = {}
    for mode in ("raw", "sha256"):
        digest = hashlib.sha256()
        moved = 0
        t0 = time.perf_counter()
        with open(spec["path"], "rb", buffering=0) as f:
            while True:
                b = f.read(chunk)
                if not b:
                    break
                if mode == "sha256":
                    digest.update(b)
                moved += len(b)
        out[mode] = {"bytes": moved, "elapsed_s": time.perf_counter() - t0}
    return {"latencies": [], "errors": 0, "elapsed_s": out["raw"]["elapsed_s"], "extra": out}


if __name__ == "__main__":
    mode, spec = sys.argv[1], json.loads(sys.argv[2])
    if mode == "server":
        asyncio.run(serve(spec))
        raise SystemExit(0)
    if mode == "pg_lookup":
        result = asyncio.run(pg_lookup(spec))
    elif mode == "promote_tx":
        result = asyncio.run(promote_tx(spec))
    elif mode == "notify":
        result = asyncio.run(notify(spec))
    elif mode == "file_read":
        result = file_read(spec)
    elif mode == "ort":
        result = ort(spec)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    json.dump(result, sys.stdout)
