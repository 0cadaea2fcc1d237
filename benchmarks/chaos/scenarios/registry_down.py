"""The agents' registry down for 60 s while two agents serve 1,000 req/s.

Two registry replicas share one Postgres and one artifact directory; the agents (and a
watcher) follow replica A only. A is SIGKILLed; while it is down, v2 is promoted through
replica B (a change made during the agents' outage). A comes back on its port. Zero
inference requests may fail, the agents converge to v2 by resuming from their cursor,
and the watcher on A sees every event exactly once, in order. Time to recover: from A's
restart to both agents serving v2."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.chaos import audit
from benchmarks.chaos.load import InferenceLoad, Watchers
from benchmarks.chaos.procs import Agent, Registry
from benchmarks.chaos.report import Row
from benchmarks.chaos.scenarios.common import Size, promote, register_scaled, shared_postgres, wait_serves
from modelreg.watch import list_events

MODEL = "chaos-down"


def last_sequence(address: str) -> int:
    import grpc

    with grpc.insecure_channel(address) as ch:
        return max([e.sequence for e in list_events(ch)] or [0])


def run(work: Path, size: Size) -> Row:
    down_s = size.pick(4, 60)
    rate = size.pick(200, 1000)
    url, pg = shared_postgres(work, size)
    shared = {"MODELREG_ARTIFACTS": str(work / "artifacts")}
    a = Registry(work / "a", database_url=url, env=shared).start()
    b = Registry(work / "b", database_url=url, env=shared).start()
    agents: list[Agent] = []
    load = watch = None
    try:
        v1, _ = register_scaled(b.address, MODEL, 1.0)
        v2, _ = register_scaled(b.address, MODEL, 2.0)
        promote(b.address, v1)
        agents = [Agent(work, a.address, [MODEL], name=f"n{i}").start() for i in range(2)]
        for ag in agents:
            wait_serves(ag, MODEL, 1, 60)
        after = last_sequence(a.address)
        watch = Watchers(a.address, [MODEL], n=1)
        time.sleep(1)
        load = InferenceLoad([ag.address for ag in agents], MODEL, rate, {v1: 1.0, v2: 2.0}).start()
        time.sleep(size.pick(1, 3))
        a.kill()
        time.sleep(1)
        promote(b.address, v2)
        time.sleep(max(0, down_s - 1))
        a.start()
        back = time.monotonic()
        for ag in agents:
            wait_serves(ag, MODEL, 2, 120)
        recover = time.monotonic() - back
        time.sleep(size.pick(1, 3))
        load.stop()
        found = audit.Audit()
        seq = last_sequence(b.address)
        deadline = time.monotonic() + 30
        while not watch.reached(seq) and time.monotonic() < deadline:
            time.sleep(0.2)
        audit.watchers(b.address, [MODEL], watch, after, found)
        if load.failed or load.wrong:
            found.add(f"{load.failed} failed and {load.wrong} wrong inference answers: {load.samples[:3]}")
        return Row(
            scenario=f"Registry down {down_s} s, agents serving {rate:,} req/s",
            unit="inference requests",
            attempted=load.sent,
            acknowledged=load.ok,
            lost=0,
            duplicated=0,
            agent_failures=load.failed + load.wrong,
            recover_s=recover,
            violations=found.violations,
            notes=f"achieved {load.achieved_rate:.0f} req/s over 2 agents; answers by version {load.versions}",
            size=f"{down_s} s outage, {rate} req/s target",
        )
    finally:
        if load is not None and load.thread.is_alive():
            load.stop()
        if watch is not None:
            watch.close()
        for ag in agents:
            ag.stop()
        a.stop()
        b.stop()
        if pg:
            pg.stop()
