"""The agent's cache disk fills up. The cache directory is a small tmpfs mount (root only);
where mounting is refused the agent runs under a file-size limit instead (`prlimit --fsize`,
so a write past it fails like a full disk). v2 is bigger than the space left: it must fail
with a reported error (FAILED, naming the cause), while v1 keeps serving every request."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

from benchmarks.chaos.load import InferenceLoad
from benchmarks.chaos.procs import Agent, wait_until
from benchmarks.chaos.report import Row
from benchmarks.chaos.scenarios.common import Size, promote, register_scaled, registry, states, wait_serves
from modelreg.v1 import agent_service_pb2 as ag

MODEL = "chaos-disk"
DISK = 16 << 20


def _mount(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def run(work: Path, size: Size) -> Row:
    reg = registry(work / "reg", size)
    agent = Agent(work, reg.address, [MODEL])
    mounted = _mount(agent.cache_dir)
    if not mounted:
        agent.wrap = ["prlimit", f"--fsize={DISK}", "--"]
    load = None
    violations: list[str] = []
    try:
        v1, _ = register_scaled(reg.address, MODEL, 1.0)
        v2, _ = register_scaled(reg.address, MODEL, 2.0, pad_bytes=DISK * 2)
        promote(reg.address, v1)
        agent.start()
        wait_serves(agent, MODEL, 1, 60)
        load = InferenceLoad([agent.address], MODEL, size.pick(100, 300), {v1: 1.0, v2: 2.0}).start()
        time.sleep(0.5)
        promote(reg.address, v2)
        t0 = time.monotonic()
        error = ""
        try:
            wait_until(
                lambda: states(agent, MODEL).get(2, (0, ""))[0] == ag.SERVED_VERSION_STATE_FAILED, 60, "v2 FAILED"
            )
            error = states(agent, MODEL)[2][1]
        except TimeoutError as e:
            violations.append(f"{e}; v2 is {states(agent, MODEL).get(2)}")
        reported = time.monotonic() - t0
        time.sleep(size.pick(2, 10))
        load.stop()
        if not wait_serves(agent, MODEL, 1, 5) >= 0:
            violations.append("v1 is no longer the one serving")
        if error and "space" not in error.lower() and "size" not in error.lower():
            violations.append(f"v2's error does not name the full disk: {error!r}")
        if load.failed or load.wrong:
            violations.append(f"{load.failed + load.wrong} failed requests: {load.samples[:3]}")
        if agent.proc is not None and agent.proc.poll() is not None:
            violations.append(f"the agent exited with {agent.proc.returncode}")
        return Row(
            scenario="Cache disk full on the agent",
            unit="inference requests",
            attempted=load.sent,
            acknowledged=load.ok,
            lost=0,
            duplicated=0,
            agent_failures=load.failed + load.wrong,
            recover_s=None,
            violations=violations,
            notes=f"{'tmpfs' if mounted else 'RLIMIT_FSIZE'} of {DISK >> 20} MiB, v2 {2 * DISK >> 20} MiB: "
            f"reported FAILED in {reported:.1f} s ({error[:90]!r})",
            size=f"{DISK >> 20} MiB cache disk",
        )
    finally:
        if load is not None and load.thread.is_alive():
            load.stop()
        agent.stop()
        reg.stop()
        reg.stop_postgres()
        if mounted:
            with contextlib.suppress(Exception):
                subprocess.run(["umount", "-l", str(agent.cache_dir)], capture_output=True)
