"""One of three replicas SIGKILLed during promotions.

Three `modelreg server` processes share one Postgres and one artifact directory. Watchers
and the promoting client are given all three addresses (gRPC's `ipv4:a,b,c` target) and
spread over them by the order of the list; the replica most of them hold is killed while
promotions go on. Every acknowledged promotion is in the history, and every watcher
receives every event exactly once, in order. Time to recover: from the kill to the
first acknowledged promotion sent after it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from benchmarks.chaos import audit
from benchmarks.chaos.load import RETRYABLE, Watchers, code_of
from benchmarks.chaos.procs import Registry, wait_until
from benchmarks.chaos.report import Row
from benchmarks.chaos.scenarios.common import Size, client, register_scaled, shared_postgres
from benchmarks.chaos.scenarios.registry_down import last_sequence
from modelreg.v1 import resources_pb2 as res

MODEL = "chaos-replicas"


def target(addresses: list[str], first: int) -> str:
    """`ipv4:` target listing every replica, starting with `addresses[first]`."""
    order = addresses[first:] + addresses[:first]
    return "ipv4:" + ",".join(order)


def run(work: Path, size: Size) -> Row:
    n_watchers = size.pick(6, 60)
    seconds = size.pick(4, 20)
    url, pg = shared_postgres(work, size)
    shared = {"MODELREG_ARTIFACTS": str(work / "artifacts")}
    reps = [Registry(work / f"r{i}", database_url=url, env=shared).start() for i in range(3)]
    addrs = [r.address for r in reps]
    watch = None
    try:
        for scale in range(1, 4):
            register_scaled(addrs[0], MODEL, float(scale))
        after = last_sequence(addrs[0])
        # Two thirds of the watchers start on replica 0, the one that will die.
        watch = Watchers([target(addrs, 0 if i % 3 else 1) for i in range(n_watchers)], [MODEL], n=n_watchers)
        wait_until(lambda: all(w.last_sequence is not None for w in watch.watchers), 60, "every watcher's snapshot")
        acked: list[tuple[float, float, int]] = []
        attempted = [0]
        failed: list[str] = []
        stop = threading.Event()

        def promoter() -> None:
            with client(target(addrs, 0), timeout=10) as c:
                i = 0
                while not stop.is_set():
                    v = 1 + i % 3
                    attempted[0] += 1
                    for _ in range(40):
                        t0 = time.monotonic()
                        try:
                            c.promote(MODEL, v, "production", reason="chaos")
                            acked.append((t0, time.monotonic(), v))
                            break
                        except Exception as e:  # noqa: BLE001 - retried if transient
                            if code_of(e) not in RETRYABLE:
                                failed.append(repr(e)[:200])
                                break
                            time.sleep(0.1)
                    i += 1
                    time.sleep(0.05)

        t = threading.Thread(target=promoter, daemon=True)
        t.start()
        time.sleep(seconds / 2)
        reps[0].kill()
        killed_at = time.monotonic()
        time.sleep(seconds / 2)
        stop.set()
        t.join(60)
        found = audit.Audit()
        after_kill = [end for start, end, _ in acked if start > killed_at]
        recover = min(after_kill) - killed_at if after_kill else None
        if recover is None:
            found.add("no promotion acknowledged after the kill")
        final = last_sequence(addrs[1])
        deadline = time.monotonic() + 60
        while not watch.reached(final) and time.monotonic() < deadline:
            time.sleep(0.2)
        audit.watchers(addrs[1], [MODEL], watch, after, found)
        with client(addrs[1]) as c:
            moves = sum(1 for h in c.history(MODEL) if h.to_stage == res.STAGE_PRODUCTION)
        # A promotion of the version already in production is acknowledged without a move.
        if moves < len({i for i, (_, _, v) in enumerate(acked) if i == 0 or acked[i - 1][2] != v}):
            found.add(f"{len(acked)} promotions acknowledged but only {moves} moves in the history")
        for f in failed:
            found.add(f"a promotion failed: {f}")
        events = sum(len(s) for s in watch.seen)
        return Row(
            scenario="One of three replicas killed during promotions",
            unit="promotions",
            attempted=attempted[0],
            acknowledged=len(acked),
            lost=0,
            duplicated=0,
            agent_failures=None,
            recover_s=recover,
            violations=found.violations,
            notes=f"{n_watchers} watchers ({n_watchers * 2 // 3} on the killed replica) received {events:,} events",
            size=f"{n_watchers} watchers, {seconds} s of promotions",
        )
    finally:
        if watch is not None:
            watch.close()
        for r in reps:
            r.stop()
        if pg:
            pg.stop()
