"""The registry SIGKILLed mid-transfer.

upload:   a big artifact (1 GiB full) streams in; the server is killed halfway and started
          again. No version exists without its bytes, the dead upload's temp file is gone
          after the restart (or the janitor's next pass), and the client's retry with the
          same request id produces exactly one READY version whose download verifies.
download: clients download a version over and over; the server is killed while they
          stream and started again. Every download either completes verified (resuming
          its .part) or fails loudly; none yields bytes that do not hash to the digest.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from pathlib import Path

from benchmarks.chaos.load import RETRYABLE, code_of
from benchmarks.chaos.procs import Registry, wait_until
from benchmarks.chaos.report import Row
from benchmarks.chaos.scenarios.common import Size, big_file, client, registry, tmp_uploads
from modelreg.v1 import resources_pb2 as res

MODEL = "chaos-transfer"


def _restart(reg: Registry) -> float:
    """Starts the killed server again on its port; returns when it answers a read."""
    reg.start()
    t0 = time.monotonic()
    with client(reg.address, timeout=5) as c:
        wait_until(lambda: c.list_models() is not None and list(c.list_models()) is not None, 120, "a read")
    return time.monotonic() - t0


def upload(work: Path, size: Size) -> Row:
    nbytes = size.pick(48 << 20, 1 << 30)
    src = work / "big.bin"
    digest = big_file(src, nbytes)
    reg = registry(work / "reg", size)
    violations: list[str] = []
    rid = uuid.uuid4().hex
    sent = [0]
    first_error: list[BaseException] = []

    def progress(done: int, total: int) -> None:
        sent[0] = done

    def first_try() -> None:
        try:
            with client(reg.address, timeout=600) as c:
                c.register(MODEL, src, request_id=rid, progress=progress)
            first_error.append(RuntimeError("the first upload finished before the kill"))
        except Exception as e:  # noqa: BLE001 - the kill is meant to fail it
            first_error.append(e)

    try:
        t = threading.Thread(target=first_try, daemon=True)
        t.start()
        wait_until(lambda: sent[0] >= nbytes // 2 or first_error, 600, "half the upload sent", 0.01)
        reg.kill()
        killed_at = time.monotonic()
        t.join(60)
        if first_error and code_of(first_error[0]) not in RETRYABLE:
            violations.append(f"the cut upload failed with {first_error[0]!r}, not UNAVAILABLE")
        leftover = tmp_uploads(reg.root / "artifacts")
        _restart(reg)
        with client(reg.address) as c:
            half = [mv.name for mv in c.list_versions(MODEL)] if _has_model(c) else []
        if half:
            violations.append(f"versions after the cut upload, before any retry: {half}")
        with client(reg.address, timeout=600) as c:
            mv = c.register(MODEL, src, request_id=rid)
            recover = time.monotonic() - killed_at
            again = c.register(MODEL, src, request_id=rid)
            versions = list(c.list_versions(MODEL))
            if again.name != mv.name or len(versions) != 1:
                violations.append(f"the retries made {[v.name for v in versions]}")
            if mv.state != res.MODEL_VERSION_STATE_READY or mv.artifact.sha256 != digest:
                violations.append(f"{mv.name} is {mv.state} with sha256 {mv.artifact.sha256}")
            got = c.download(MODEL, 1, dest=work / "down")
            got.unlink()
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not tmp_uploads(reg.root / "artifacts"), size.pick(30, 90), "the temp upload removed")
        orphans = tmp_uploads(reg.root / "artifacts")
        if orphans:
            mb = sum(p.stat().st_size for p in orphans if p.exists()) / 1e6
            violations.append(f"{len(orphans)} orphaned temp uploads ({mb:.0f} MB) after the restart")
        return Row(
            scenario="Registry SIGKILLed mid-upload",
            unit="uploads",
            attempted=2,
            acknowledged=1,
            lost=0,
            duplicated=max(0, len(versions) - 1),
            agent_failures=None,
            recover_s=recover,
            violations=violations,
            notes=f"killed at {sent[0] / nbytes:.0%} sent; {len(leftover)} temp file(s) right after the kill",
            size=f"{nbytes / 2**20:.0f} MiB",
        )
    finally:
        reg.stop()
        reg.stop_postgres()
        src.unlink(missing_ok=True)


def _has_model(c) -> bool:
    try:
        c.get_model(MODEL)
        return True
    except Exception:  # noqa: BLE001 - NOT_FOUND
        return False


def download(work: Path, size: Size) -> Row:
    nbytes = size.pick(24 << 20, 256 << 20)
    src = work / "art.bin"
    digest = big_file(src, nbytes, seed=3)
    reg = registry(work / "reg", size)
    with client(reg.address, timeout=600) as c:
        c.register(MODEL, src)
    src.unlink()
    clients = size.pick(3, 8)
    rounds = size.pick(2, 4)
    stats = {"attempted": 0, "ok": 0, "bad": 0, "gave_up": 0, "retries": 0}
    lock = threading.Lock()
    violations: list[str] = []
    started = threading.Barrier(clients + 1)
    completed_after: list[float] = []
    killed_at = [float("inf")]

    def downloader(i: int) -> None:
        started.wait()
        with client(reg.address, timeout=120) as c:
            for r in range(rounds):
                with lock:
                    stats["attempted"] += 1
                dest = work / f"d{i}"
                deadline = time.monotonic() + 180
                t_start = time.monotonic()
                while True:
                    try:
                        path = c.download(MODEL, 1, dest=dest, filename=f"r{r}.bin")
                        with lock:
                            stats["ok"] += 1
                            if t_start < killed_at[0] < time.monotonic():
                                completed_after.append(time.monotonic())
                        if path.stat().st_size != nbytes:
                            with lock:
                                stats["bad"] += 1
                        path.unlink()
                        break
                    except Exception as e:  # noqa: BLE001 - retried while the server is back
                        if type(e).__name__ == "IntegrityError":
                            with lock:
                                stats["bad"] += 1
                        if time.monotonic() > deadline:
                            with lock:
                                stats["gave_up"] += 1
                            violations.append(f"client {i} gave up: {e!r}"[:300])
                            break
                        with lock:
                            stats["retries"] += 1
                        time.sleep(0.3)

    try:
        threads = [threading.Thread(target=downloader, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        started.wait()
        parts = lambda: [p for d in work.glob("d*") for p in d.glob("*.part") if p.stat().st_size > 0]  # noqa: E731
        wait_until(parts, 120, "downloads streaming", 0.01)
        reg.kill()
        killed_at[0] = time.monotonic()
        time.sleep(size.pick(1, 3))
        _restart(reg)
        for t in threads:
            t.join(300)
        recover = (min(completed_after) - killed_at[0]) if completed_after else None
        if stats["bad"]:
            violations.append(f"{stats['bad']} downloads yielded bytes that do not match sha256 {digest[:12]}")
        return Row(
            scenario="Registry SIGKILLed during downloads",
            unit="downloads",
            attempted=stats["attempted"],
            acknowledged=stats["ok"],
            lost=stats["gave_up"],
            duplicated=0,
            agent_failures=None,
            recover_s=recover,
            violations=violations,
            notes=f"{clients} clients x {rounds} downloads; {stats['retries']} resumed retries; {stats['bad']} damaged",
            size=f"{nbytes / 2**20:.0f} MiB artifact",
        )
    finally:
        reg.stop()
        reg.stop_postgres()
