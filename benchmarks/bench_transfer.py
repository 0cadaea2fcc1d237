"""Goal 11, local parts: artifact transfer through the registry.

Registers one large artifact (2 GiB in the full run) through the SDK, then downloads it
through the DownloadArtifact stream with 1 MiB chunks (the load generator counts bytes and
does not hash them), next to the floor: reading the stored blob file in 1 MiB chunks (and
reading + sha256, which the server does on the way out to catch corruption). The server's
RSS is sampled every 20 ms during the upload and the downloads; growth is peak - before.
The S3 parts (presigned fetch and upload vs a raw S3 SDK GET/PUT) are in bench_s3.
"""

from __future__ import annotations

import os

from benchmarks.common import alternate, med, ratio, reps_detail
from benchmarks.env import RssSampler, log
from benchmarks.report import Row

NAME = "transfer"
GOALS = "11"
GIB = 1 << 30
MIB = 1 << 20


def _big_file(path, size: int) -> None:
    block = os.urandom(4 * MIB)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)


def run(env, cfg) -> list[Row]:
    import time

    from modelreg import Client

    size = cfg.big_bytes
    path = env.tmp / "big.bin"
    _big_file(path, size)
    address, pid = env.ours, env.ours_pid
    log(f"uploading {size / MIB:.0f} MiB through RegisterModelVersion")
    with Client(address, actor="bench", timeout=None) as c, RssSampler(pid) as up_rss:
        t0 = time.perf_counter()
        v = c.register("bench-big", str(path), format="other")  # random bytes, not ONNX
        up_s = time.perf_counter() - t0
    path.unlink()
    blob = env.tmp / "modelreg" / "artifacts" / "sha256" / v.artifact.sha256[:2] / v.artifact.sha256
    name = f"models/bench-big/versions/{v.version}"

    def floor() -> dict:
        r = env.floor_call("file_read", {"path": str(blob), "chunk_size": MIB})
        raw, hashed = r["extra"]["raw"], r["extra"]["sha256"]
        return {
            "throughput": raw["bytes"] / raw["elapsed_s"] / GIB,
            "sha_gibs": hashed["bytes"] / hashed["elapsed_s"] / GIB,
            "p50_us": raw["elapsed_s"] * 1e6,
            "p99_us": raw["elapsed_s"] * 1e6,
        }

    down_rss: list[int] = []

    def ours() -> dict:
        with RssSampler(pid) as rss:
            r = env.load(
                {
                    "op": "download",
                    "target": address,
                    "name": name,
                    "chunk_size": MIB,
                    "concurrency": 1,
                    "count": 1,
                    "warmup_calls": 0,
                }
            )
        down_rss.append(rss.growth)
        moved = r["extra"].get("bytes", 0)
        if moved != size:
            raise RuntimeError(f"download moved {moved} bytes, expected {size}: {r['error_samples']}")
        return dict(r, throughput=moved / r["elapsed_s"] / GIB)

    res = alternate(cfg.reps, {"ours_download": ours, "floor_file_read": floor})
    gibs = med(res, "ours_download", "throughput")
    raw = med(res, "floor_file_read", "throughput")
    sha = med(res, "floor_file_read", "sha_gibs")
    detail = {
        "bytes": size,
        "gibs_per_rep": reps_detail(res, "throughput"),
        "upload_s": up_s,
        "upload_rss_growth": up_rss.growth,
        "download_rss_growth": down_rss,
    }
    label = f"{size / GIB:g} GiB" if size >= GIB else f"{size / MIB:g} MiB"
    return [
        Row(
            goal="11",
            bench=NAME,
            figure=f"download via registry stream, 1 MiB chunks, {label}",
            ours=gibs,
            unit="GiB/s",
            ref=raw,
            ref_label="raw file read",
            ratio=ratio(gibs, raw),
            ratio_of="ours/raw read",
            target=(">=", 1),
            goal_on="ours",
            note=f"read+sha256 floor {sha:.2f} GiB/s",
            details=detail,
        ),
        Row(
            goal="11",
            bench=NAME,
            figure=f"upload via RegisterModelVersion (SDK, sha256 both ends), {label}",
            ours=size / up_s / GIB,
            unit="GiB/s",
            note="context: one run",
            details=detail,
        ),
        Row(
            goal="11",
            bench=NAME,
            figure=f"server RSS growth during upload, {label}",
            ours=up_rss.growth / MIB,
            unit="MiB",
            target=("<", 200),
            goal_on="ours",
            details=detail,
        ),
        Row(
            goal="11",
            bench=NAME,
            figure=f"server RSS growth during downloads, {label}",
            ours=max(down_rss) / MIB,
            unit="MiB",
            target=("<", 200),
            goal_on="ours",
            details=detail,
        ),
    ]
