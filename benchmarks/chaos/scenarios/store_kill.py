"""The object store (SeaweedFS) SIGKILLed mid-upload: the caller gets UNAVAILABLE, no version
and no object is left behind, and the next upload after the store returns succeeds and
downloads verified. Time to recover: from the store's restart to that upload's success."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from benchmarks.chaos.load import code_of
from benchmarks.chaos.procs import ObjectStore, wait_until
from benchmarks.chaos.report import Row
from benchmarks.chaos.scenarios.common import Size, big_file, client, registry

MODEL = "chaos-store"


def _objects(store: ObjectStore, bucket: str) -> list[str]:
    return [o.object_name for o in store.client().list_objects(bucket, recursive=True)]


def run(work: Path, size: Size) -> Row:
    nbytes = size.pick(48 << 20, 512 << 20)
    src = work / "big.bin"
    big_file(src, nbytes, seed=11)
    store = ObjectStore(work / "weed")
    store.start()
    bucket = f"chaos-{uuid.uuid4().hex[:8]}"
    reg = registry(work / "reg", size, env=store.registry_env(bucket))
    violations: list[str] = []
    sent = [0]
    outcome: list[BaseException | str] = []
    attempted = acked = 0
    try:
        with client(reg.address, timeout=60) as c:
            c.register(MODEL, b"warm-up: the bucket exists", request_id="warm")
        before = set(_objects(store, bucket))

        def first_try() -> None:
            try:
                with client(reg.address, timeout=300) as c:
                    c.register(MODEL, src, progress=lambda d, t: sent.__setitem__(0, d))
                outcome.append("acknowledged")
            except Exception as e:  # noqa: BLE001 - the kill is meant to fail it
                outcome.append(e)

        t = threading.Thread(target=first_try, daemon=True)
        t.start()
        attempted += 1
        wait_until(lambda: sent[0] >= nbytes // 2 or outcome, 300, "half the upload sent", 0.01)
        store.kill()
        t.join(300)
        if not outcome:
            violations.append("the upload never returned after the store died")
        elif outcome[0] == "acknowledged":
            acked += 1
            violations.append("the upload was acknowledged although the store died mid-way")
        elif code_of(outcome[0]) is None or code_of(outcome[0]).name != "UNAVAILABLE":
            violations.append(f"the caller got {outcome[0]!r}, not UNAVAILABLE")
        store.start()
        restarted = time.monotonic()
        with client(reg.address, timeout=300) as c:
            names = [mv.name for mv in c.list_versions(MODEL)]
            if names != [f"models/{MODEL}/versions/1"]:
                violations.append(f"versions after the failed upload: {names}")
            left = sorted(set(_objects(store, bucket)) - before)
            if left:
                violations.append(f"objects left by the failed upload: {left[:5]}")
            attempted += 1
            deadline = time.monotonic() + 120
            while True:
                try:
                    mv = c.register(MODEL, src)
                    acked += 1
                    break
                except Exception as e:  # noqa: BLE001 - the store may take a moment
                    if time.monotonic() > deadline:
                        violations.append(f"the upload after the store returned failed: {e!r}")
                        mv = None
                        break
                    time.sleep(0.5)
            recover = time.monotonic() - restarted if mv else None
            if mv is not None:
                c.download(MODEL, int(mv.name.rsplit("/", 1)[1]), dest=work / "down").unlink()
        return Row(
            scenario="Object store SIGKILLed mid-upload",
            unit="uploads",
            attempted=attempted,
            acknowledged=acked,
            lost=0,
            duplicated=0,
            agent_failures=None,
            recover_s=recover,
            violations=violations,
            notes=f"killed at {sent[0] / nbytes:.0%} sent; the caller got "
            f"{code_of(outcome[0]).name if outcome and code_of(outcome[0]) else outcome[:1]}",
            size=f"{nbytes / 2**20:.0f} MiB",
        )
    finally:
        reg.stop()
        reg.stop_postgres()
        store.kill()
        src.unlink(missing_ok=True)
