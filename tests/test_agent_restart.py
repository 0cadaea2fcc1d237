"""The agent and the registry restarting: a node keeps serving from its cache while the
registry is down, and a promotion made while the agent was away is not missed."""

from __future__ import annotations

import numpy as np
import pytest
from agent_helpers import AgentProcess, onnx_scale_model, wait_until
from conftest import free_port

from modelreg import Client


@pytest.fixture
def agent_procs():
    started: list[AgentProcess] = []
    yield started
    for a in started:
        a.stop()


def _stop(proc) -> None:
    proc.terminate()
    proc.wait(15)


def _output(agent: AgentProcess, model: str):
    with agent.client() as c:
        r = c.predict(model, {"x": np.ones((1, 4), np.float32)})
    return r.model_version, float(r.outputs["y"][0, 0])


def test_agent_restarted_while_registry_down_serves_from_cache(spawn_registry, agent_procs, tmp_path):
    port = free_port()
    proc, address = spawn_registry(port)
    with Client(address, actor="tester") as reg:
        v1 = reg.register("offline", onnx_scale_model(7.0), filename="o.onnx")
        reg.promote("offline", v1.version, "production")
    cache = tmp_path / "cache"
    first = AgentProcess(
        address, ["offline"], cache, tmp_path / "agent-1.log", free_port(), extra=["--agent-id", "node-a"]
    ).start()
    agent_procs.append(first)
    first.wait_serving()
    first.stop()
    _stop(proc)  # the registry is gone

    second = AgentProcess(
        address, ["offline"], cache, tmp_path / "agent-2.log", free_port(), extra=["--agent-id", "node-a"]
    ).start()
    agent_procs.append(second)
    second.wait_serving()
    assert _output(second, "offline") == ("models/offline/versions/1", 7.0)
    with second.client() as c:
        st = c.serving_status(["offline"])
    (v,) = st.models[0].versions
    assert v.download_seconds == 0.0, "a warm cache must load without downloading"
    assert "registry unreachable" in second.log()


def test_registry_restart_agent_resumes_without_missing_a_promotion(spawn_registry, agent_procs, tmp_path):
    port = free_port()
    proc, address = spawn_registry(port)
    with Client(address, actor="tester") as reg:
        v1 = reg.register("resume", onnx_scale_model(1.0), filename="r.onnx")
        reg.promote("resume", v1.version, "production")
    agent = AgentProcess(
        address, ["resume"], tmp_path / "cache", tmp_path / "agent.log", free_port(), extra=["--agent-id", "node-b"]
    ).start()
    agent_procs.append(agent)
    agent.wait_serving()
    _stop(proc)

    # While the agent's registry is down, v2 is promoted through another replica on the same
    # database (the agent does not know that address).
    other, other_address = spawn_registry(free_port())
    with Client(other_address, actor="tester") as reg:
        v2 = reg.register("resume", onnx_scale_model(2.0), filename="r.onnx")
        reg.promote("resume", v2.version, "production")
    _stop(other)
    assert _output(agent, "resume") == ("models/resume/versions/1", 1.0), "the agent stops serving while away"

    spawn_registry(port)
    wait_until(
        lambda: _output(agent, "resume")[0] == "models/resume/versions/2",
        60,
        what="the agent picking up v2 after the registry came back",
    )
    assert _output(agent, "resume") == ("models/resume/versions/2", 2.0)
    with Client(address, actor="tester") as reg:
        st = wait_until(lambda: (s := reg.rollout_status("resume")).complete and s, 30, what="rollout complete")
    assert st.deployment.stable.version_number == 2


def test_a_cut_download_resumes_from_its_part_file(client, registry, agent_procs, tmp_path):
    data = onnx_scale_model(3.0)
    v1 = client.register("partial", data, filename="p.onnx")
    client.promote("partial", v1.version, "production")
    cache = tmp_path / "cache"
    (cache / "blobs").mkdir(parents=True)
    half = len(data) // 2
    (cache / "blobs" / f"{v1.artifact.sha256}.part").write_bytes(data[:half])  # what a cut left behind
    agent = AgentProcess(registry.address, ["partial"], cache, tmp_path / "agent.log", free_port()).start()
    agent_procs.append(agent)
    agent.wait_serving()
    assert f"resuming the download at byte {half} of {len(data)}" in agent.log()
    assert _output(agent, "partial") == ("models/partial/versions/1", 3.0)
    assert not (cache / "blobs" / f"{v1.artifact.sha256}.part").exists()
