"""The agent SIGKILLed mid-download and mid-swap.

download: v2 (big) is promoted; the agent is killed once its `.part` file holds some of
          the bytes; started again on the same cache it resumes the download, verifies it
          and serves v2.
swap:     v2 (big) is promoted; the agent is killed while v2 is LOADING (after the download,
          before the swap); started again it serves v2. Then v3, whose bytes are not a model,
          is promoted under load: v2 keeps serving every request and v3 is reported FAILED.
Inference load runs whenever the agent is up (it is down by design between kill and restart,
and those requests are not counted); every answer must come from the version it names.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.chaos.load import InferenceLoad, unloadable_onnx
from benchmarks.chaos.procs import Agent, wait_until
from benchmarks.chaos.report import Row
from benchmarks.chaos.scenarios.common import Size, client, promote, register_scaled, registry, states, wait_serves
from modelreg.v1 import agent_service_pb2 as ag

MODEL = "chaos-agent"


def _serve(agent: Agent, rate: float, scales: dict[str, float], seconds: float) -> InferenceLoad:
    load = InferenceLoad([agent.address], MODEL, rate, scales).start()
    time.sleep(seconds)
    load.stop()
    return load


def _parts(agent: Agent) -> list[Path]:
    return [p for p in (agent.cache_dir / "blobs").glob("*.part") if p.stat().st_size > 0]


def run(work: Path, size: Size, *, during: str) -> Row:
    pad = size.pick(64 << 20, 512 << 20)
    reg = registry(work / "reg", size)
    agent = None
    loads: list[InferenceLoad] = []
    violations: list[str] = []
    try:
        v1, _ = register_scaled(reg.address, MODEL, 1.0)
        v2, _ = register_scaled(reg.address, MODEL, 2.0, pad_bytes=pad)
        scales = {v1: 1.0, v2: 2.0}
        promote(reg.address, v1)
        agent = Agent(work, reg.address, [MODEL]).start()
        wait_serves(agent, MODEL, 1, 60)
        loads.append(_serve(agent, 100, scales, 1))
        promote(reg.address, v2)
        if during == "download":
            wait_until(lambda: _parts(agent), 120, "the agent's .part file", 0.005)
            part_bytes = max(p.stat().st_size for p in _parts(agent))
            what = f"killed with {part_bytes / 2**20:.0f} of {pad / 2**20:.0f} MiB in its .part file"
        else:
            wait_until(
                lambda: (
                    states(agent, MODEL).get(2, (0, ""))[0] == ag.SERVED_VERSION_STATE_LOADING and not _parts(agent)
                ),
                120,
                "v2 LOADING after its download",
                0.01,
            )
            what = "killed while v2 was LOADING"
        agent.kill()
        killed_at = time.monotonic()
        agent.start(wait=False)
        wait_serves(agent, MODEL, 2, 180)
        recover = time.monotonic() - killed_at
        log = agent.log()
        resumed = "resum" in log.lower()
        if during == "download" and not resumed:
            violations.append("the restarted agent did not resume the download (no 'resum' in its log)")
        loads.append(_serve(agent, 100, scales, 1))
        attempted = 2
        acked = 2
        if during == "swap":
            with client(reg.address) as c:
                bad = c.register(MODEL, unloadable_onnx(), format="onnx", filename="bad.onnx")
            load = InferenceLoad([agent.address], MODEL, 100, scales).start()
            promote(reg.address, bad.name)
            attempted += 1
            try:
                wait_until(
                    lambda: states(agent, MODEL).get(3, (0, ""))[0] == ag.SERVED_VERSION_STATE_FAILED, 60, "v3 FAILED"
                )
            except TimeoutError as e:
                violations.append(str(e))
            time.sleep(1)
            load.stop()
            loads.append(load)
            if not wait_serves(agent, MODEL, 2, 1) >= 0:
                violations.append("v2 stopped serving when v3 failed")
            what += f"; v3 (not a model) reported FAILED: {states(agent, MODEL).get(3, (0, ''))[1][:80]!r}"
        failed = sum(x.failed + x.wrong for x in loads)
        if failed:
            violations.append(f"{failed} failed inference requests: {[s for x in loads for s in x.samples][:3]}")
        return Row(
            scenario=f"Agent SIGKILLed mid-{during}",
            unit="rollouts",
            attempted=attempted,
            acknowledged=acked,
            lost=0,
            duplicated=0,
            agent_failures=failed,
            recover_s=recover,
            violations=violations,
            notes=f"{what}; {sum(x.sent for x in loads):,} inference requests while up",
            size=f"{pad / 2**20:.0f} MiB model",
        )
    finally:
        if agent is not None:
            agent.stop()
        reg.stop()
        reg.stop_postgres()
