"""Issue 16's speed and size goals for the web console, against our server only.

- The model page of a model with 2,000 versions and 10 metric keys each (20-epoch curves
  of two of them), paged (50 versions a page), renders in <= 150 ms p95. Measured from a
  client over loopback on one keep-alive connection, so the figure includes HTTP: an
  upper bound of the server-side render.
- GET /api/v1/models/{m}/versions/{n} p50 is within 2x of gRPC GetModelVersion p50 for
  the same version, in the same run, one client each, alternated.
- The whole front end a model page loads (its HTML, console.css and console.js, htmx,
  uPlot and its CSS) weighs <= 200 KiB gzipped (gzip -6, as a server or CDN would send it).
"""

from __future__ import annotations

import concurrent.futures
import gzip
import http.client
import time
from pathlib import Path

from benchmarks.env import free_port, log
from benchmarks.report import Row
from benchmarks.stats import median, percentile

NAME = "console"
GOALS = "16"
MODEL = "bench-console"
KEYS = [f"metric_{i}" for i in range(8)] + ["loss", "map50"]
STATIC = Path(__file__).resolve().parent.parent / "registry_server" / "console" / "static"
FRONT_END = ["console.css", "console.js", "vendor/htmx.min.js", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"]


def _server(env, versions: int):
    """A server of its own with the console on (a small pool: one client calls it), seeded:
    (process, gRPC address, HTTP port). The caller stops it: the benchmarks after this one
    need the shared Postgres's connections."""
    from modelreg import Client

    port = free_port()
    proc, address = env.spawn_server(
        "console",
        env.database("modelreg_console"),
        {"MODELREG_HTTP_ADDRESS": f"127.0.0.1:{port}", "MODELREG_DB_POOL_SIZE": "4"},
    )
    log(f"  seeding {MODEL}: {versions} versions x {len(KEYS)} metric keys")

    def register(n: int) -> None:
        with Client(address, actor="bench") as c:
            for i in range(n, versions + 1, 8):
                metrics = {k: round(0.5 + ((i * 7 + j) % 100) / 200, 4) for j, k in enumerate(KEYS)}
                history = {
                    "loss": [(e, 2.0 / (e + i % 5)) for e in range(1, 21)],
                    "map50": [(e, 0.3 + e / 50) for e in range(1, 21)],
                }
                c.register(
                    MODEL,
                    f"console-{i}".encode(),
                    filename="m.bin",
                    format="other",
                    metrics=metrics,
                    metric_history=history,
                )

    with Client(address, actor="bench") as c:
        c.create_model(MODEL, default_config={"lr": 0.01})
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(register, range(1, 9)))
    with Client(address, actor="bench") as c:
        c.promote(MODEL, versions // 2, "production", reason="bench")
    return proc, address, port


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
    return elapsed, body


def run(env, cfg) -> list[Row]:
    versions = 24 if cfg.quick else 2000
    calls = 5 if cfg.quick else 200
    reads = 60 if cfg.quick else 3000
    proc, address, port = _server(env, versions)
    try:
        return _measure(address, port, versions, calls, reads)
    finally:
        proc.terminate()
        proc.wait(30)
        env.procs.remove(proc)


def _measure(address: str, port: int, versions: int, calls: int, reads: int) -> list[Row]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    page = f"/models/{MODEL}"
    for _ in range(3):  # warm: caches, templates, the connection
        _, html = _get(conn, page)
    page_ms = [_get(conn, page)[0] * 1000 for _ in range(calls)]
    compare_ms = [_get(conn, f"{page}?v={versions}&v={versions - 1}&v={versions // 2}")[0] * 1000 for _ in range(calls)]

    import grpc

    from modelreg.v1 import registry_service_pb2 as rs
    from modelreg.v1 import registry_service_pb2_grpc as rs_grpc

    name = f"models/{MODEL}/versions/{versions}"
    path = f"/api/v1/{name}"
    json_us: list[float] = []
    grpc_us: list[float] = []
    with grpc.insecure_channel(address) as channel:
        stub = rs_grpc.RegistryServiceStub(channel)
        request = rs.GetModelVersionRequest(name=name)
        for _ in range(20):
            stub.GetModelVersion(request, timeout=10)
            _get(conn, path)
        for _ in range(3):  # alternate windows, so neither side always runs first
            for _ in range(reads // 3):
                started = time.perf_counter()
                stub.GetModelVersion(request, timeout=10)
                grpc_us.append((time.perf_counter() - started) * 1e6)
            for _ in range(reads // 3):
                json_us.append(_get(conn, path)[0] * 1e6)
    conn.close()

    sizes = {"model page HTML": len(gzip.compress(html, 6))}
    for f in FRONT_END:
        sizes[f] = len(gzip.compress((STATIC / f).read_bytes(), 6))
    total_kib = sum(sizes.values()) / 1024
    log("  front end gzipped: " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sizes.items()))

    p95 = percentile(page_ms, 95)
    json_p50, grpc_p50 = median(json_us), median(grpc_us)
    return [
        Row(
            goal="16",
            bench=NAME,
            figure=f"model page render p95, {versions} versions x {len(KEYS)} keys, paged",
            ours=p95,
            unit="ms",
            target=("<=", 150),
            goal_on="ours",
            note=f"p50 {median(page_ms):.1f} ms over {calls} GETs (includes loopback HTTP); with a 3-version "
            f"compare and its curves p95 {percentile(compare_ms, 95):.1f} ms; page HTML {len(html) / 1024:.0f} KiB",
            details={"page_ms": [round(x, 2) for x in page_ms]},
        ),
        Row(
            goal="16",
            bench=NAME,
            figure="JSON GET of a version p50 vs gRPC GetModelVersion p50",
            ours=json_p50,
            unit="µs",
            ref=grpc_p50,
            ref_label="gRPC GetModelVersion, same run",
            ratio=json_p50 / grpc_p50 if grpc_p50 else None,
            ratio_of="json/grpc",
            target=("<=", 2.0),
            note=f"{reads} calls each, one client, keep-alive; p99 {percentile(json_us, 99):.0f} vs "
            f"{percentile(grpc_us, 99):.0f} µs",
        ),
        Row(
            goal="16",
            bench=NAME,
            figure="front end (HTML, CSS, JS) gzipped",
            ours=total_kib,
            unit="KiB",
            target=("<=", 200),
            goal_on="ours",
            note=", ".join(f"{k} {v / 1024:.1f}" for k, v in sizes.items()),
            details={"gzipped_bytes": sizes},
        ),
    ]
