"""A slow, then partitioned, then half-open network between the agent and the registry (a
TCP proxy, benchmarks.chaos.proxy, between them; a watcher takes the same path).

slow:       every chunk is held 0.2 s while v2 is promoted: the agent converges, and the
            stream is never reconnected (bookmarks keep it alive);
partition:  nothing gets through for a while: the agent keeps serving, never flaps;
half-open:  the open connections are silently black-holed (a NAT that lost its state) while
            new ones work, and v3 is promoted: the agent must notice the silence and converge.
Throughout: zero failed inference requests, health never leaves SERVING, exactly one load
per version (no restarted loads), and the watcher gets every event once, in order.
Time to recover: from the half-open cut to the agent serving v3."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.chaos import audit
from benchmarks.chaos.load import InferenceLoad, Watchers
from benchmarks.chaos.procs import Agent, wait_until
from benchmarks.chaos.proxy import FaultyProxy
from benchmarks.chaos.report import Row
from benchmarks.chaos.scenarios.common import Size, promote, register_scaled, registry, wait_serves
from benchmarks.chaos.scenarios.registry_down import last_sequence
from benchmarks.env import free_port

MODEL = "chaos-net"


def _metric(port: int, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


class HealthProbe:
    """Polls the agent's health every 0.1 s; counts the samples that were not SERVING."""

    def __init__(self, agent: Agent):
        self.agent, self.samples, self.bad = agent, 0, 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(0.1):
            self.samples += 1
            if not self.agent.serving():
                self.bad += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


def run(work: Path, size: Size) -> Row:
    slow_s, part_s = size.pick(2, 20), size.pick(3, 30)
    reg = registry(work / "reg", size)
    proxy = FaultyProxy("127.0.0.1", reg.port)
    mport = free_port()
    # The quick version pings a silent connection after 2 s instead of 10 (the half-open phase).
    keepalive = {"MODELREG_KEEPALIVE_SECONDS": str(size.pick(2, 10))}
    os.environ.update(keepalive)  # the watcher's channel, made in this process
    agent = Agent(work, proxy.address, [MODEL], extra=["--metrics-listen", f"127.0.0.1:{mport}"], env=keepalive)
    load = probe = watch = None
    violations: list[str] = []
    try:
        names = [register_scaled(reg.address, MODEL, float(s))[0] for s in (1, 2, 3)]
        scales = {n: float(i + 1) for i, n in enumerate(names)}
        promote(reg.address, names[0])
        agent.start()
        wait_serves(agent, MODEL, 1, 60)
        after = last_sequence(reg.address)
        watch = Watchers(proxy.address, [MODEL], n=1)
        wait_until(lambda: watch.watchers[0].last_sequence is not None, 30, "the watcher's snapshot")
        probe = HealthProbe(agent)
        load = InferenceLoad([agent.address], MODEL, size.pick(100, 300), scales).start()
        reconnects0 = _metric(mport, "modelreg_agent_watch_reconnects_total")

        proxy.delay = 0.2
        promote(reg.address, names[1])
        wait_serves(agent, MODEL, 2, 60)
        time.sleep(slow_s)
        proxy.delay = 0.0
        slow_reconnects = _metric(mport, "modelreg_agent_watch_reconnects_total") - reconnects0
        if slow_reconnects:
            violations.append(f"the slow link made the agent reconnect {slow_reconnects:.0f} times")

        proxy.partition()
        time.sleep(part_s)
        opened = proxy.opened
        proxy.heal()
        wait_until(
            lambda: (
                proxy.opened >= opened + 2
                and _metric(mport, "modelreg_agent_watch_connected") == 1
                and proxy.live_connections() >= 2
            ),
            60,
            "the agent and the watcher reconnected after the partition",
        )
        time.sleep(1)
        proxy.blackhole_existing()
        cut_at = time.monotonic()
        promote(reg.address, names[2])
        try:
            wait_serves(agent, MODEL, 3, size.pick(45, 90))
            recover = time.monotonic() - cut_at
        except TimeoutError:
            recover = None
            violations.append("the agent never noticed the half-open connection: v3 not served")
        time.sleep(1)
        load.stop()
        probe.stop()
        loads = _metric(mport, "modelreg_agent_loads_total")
        if loads != 3:
            violations.append(f"{loads:.0f} loads for 3 versions (restarted loads)")
        if probe.bad:
            violations.append(f"health was not SERVING in {probe.bad} of {probe.samples} samples (flapping)")
        if load.failed or load.wrong:
            violations.append(f"{load.failed + load.wrong} failed inference requests: {load.samples[:3]}")
        found = audit.Audit(violations=violations)
        final = last_sequence(reg.address)
        with_deadline = time.monotonic() + size.pick(30, 60)
        while not watch.reached(final) and time.monotonic() < with_deadline:
            time.sleep(0.2)
        audit.watchers(reg.address, [MODEL], watch, after, found)
        return Row(
            scenario="Slow, partitioned, half-open network (agent to registry)",
            unit="inference requests",
            attempted=load.sent,
            acknowledged=load.ok,
            lost=0,
            duplicated=0,
            agent_failures=load.failed + load.wrong,
            recover_s=recover,
            violations=found.violations,
            notes=f"0.2 s per chunk for {slow_s} s, {part_s} s partition, then half-open; "
            f"{_metric(mport, 'modelreg_agent_watch_reconnects_total') - reconnects0:.0f} reconnects in all",
            size=f"{slow_s} s slow, {part_s} s partitioned",
        )
    finally:
        for x in (load, probe):
            if x is not None and x.thread.is_alive():
                x.stop()
        if watch is not None:
            watch.close()
        agent.stop()
        proxy.close()
        reg.stop()
        reg.stop_postgres()
        os.environ.pop("MODELREG_KEEPALIVE_SECONDS", None)
