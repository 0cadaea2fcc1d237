"""AgentService on a real registry (reports, stale agents, bad input), the agent on a Unix
socket, grpcurl against the agent, and the agent core used in-process as a library."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from agent_helpers import AgentProcess, onnx_scale_model, wait_until

from modelreg import errors
from modelreg.v1 import agent_service_pb2 as ag
from modelreg.v1 import agent_service_pb2_grpc as ag_grpc
from serving_agent.cache import BlobCache

GRPCURL = Path(sys.executable).parent / "grpcurl"


def report(address: str, agent_id: str, model: str = "models/m", versions=()) -> ag.ReportAgentStatusResponse:
    with grpc.insecure_channel(address) as ch:
        stub = ag_grpc.AgentServiceStub(ch)
        agent = ag.Agent(
            agent_id=agent_id,
            node="node-1",
            healthy=True,
            models=[ag.AgentModelStatus(model=model, versions=list(versions))],
        )
        return stub.ReportAgentStatus(ag.ReportAgentStatusRequest(agent=agent), timeout=10)


def test_report_with_bad_agent_id_is_invalid_argument(registry):
    with pytest.raises(grpc.RpcError) as e:
        report(registry.address, "no spaces allowed")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "agent_id" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        report(registry.address, "ok", versions=[ag.ServedVersion(version=1)])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "state" in e.value.details()


def test_rollout_status_of_unknown_model_is_not_found(client):
    with pytest.raises(errors.NotFound, match="does not exist"):
        client.rollout_status("nope")


def test_silent_agents_turn_stale_and_leave_the_rollout(make_registry):
    from datetime import timedelta

    # The staleness knob is a Setting (MODELREG_AGENT_STALE_SECONDS for `modelreg server`).
    registry = make_registry(agent_stale_after=timedelta(seconds=1))
    from modelreg import Client

    with Client(registry.address, actor="t") as c:
        v = c.register("m", onnx_scale_model(1.0), filename="m.onnx")
        c.promote("m", v.version, "production")
        serving = ag.ServedVersion(version=1, sha256=v.artifact.sha256, state=ag.SERVED_VERSION_STATE_SERVING)
        assert report(registry.address, "a-1", versions=[serving]).stale_after_seconds == 1
        st = c.rollout_status("m")
        assert st.complete and st.live_agents == 1 and not st.agents[0].stale
        assert [a.agent_id for a in c.list_agents(model="m")] == ["a-1"]
        wait_until(lambda: not list(c.list_agents()), 10, what="a-1 stale")
        (stale,) = list(c.list_agents(include_stale=True))
        assert stale.stale and stale.agent_id == "a-1"
        st = c.rollout_status("m")
        assert not st.complete and st.live_agents == 0 and st.agents[0].stale


def test_agent_on_unix_socket_with_grpcurl_and_agents_list(client, registry, tmp_path, cli):
    v1 = client.register("uds", onnx_scale_model(3.0), filename="u.onnx")
    client.promote("uds", v1.version, "production")
    sock = tmp_path / "run" / "agent.sock"
    agent = AgentProcess(
        registry.address, ["uds"], tmp_path / "cache", tmp_path / "agent.log", 0, extra=["--agent-id", "uds-agent"]
    )
    agent.address = f"unix:{sock}"
    agent.extra += ["--uds", str(sock)]
    # --listen and --uds are exclusive: run without --listen
    agent.start = _start_without_listen(agent)  # type: ignore[method-assign]
    agent.start()
    try:
        agent.wait_serving()
        with agent.client() as c:
            r = c.predict("uds", {"x": np.ones((1, 4), np.float32)})
        assert r.model_version == "models/uds/versions/1"
        assert float(r.outputs["y"][0, 0]) == 3.0

        body = {
            "model": "models/uds",
            "inputs": [
                {
                    "name": "x",
                    "dtype": "DATA_TYPE_FLOAT32",
                    "shape": [1, 4],
                    "data": base64.b64encode(np.ones((1, 4), "<f4").tobytes()).decode(),
                }
            ],
        }
        proc = subprocess.run(
            [
                str(GRPCURL),
                "-plaintext",
                "-unix",
                "-d",
                json.dumps(body),
                str(sock),
                "modelreg.v1.InferenceService/Predict",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        resp = json.loads(proc.stdout)
        assert resp["model_version"] == "models/uds/versions/1"  # grpcurl prints the proto field names
        assert np.frombuffer(base64.b64decode(resp["outputs"][0]["data"]), "<f4").tolist() == [3.0] * 4

        proc = subprocess.run(
            [
                str(GRPCURL),
                "-plaintext",
                "-unix",
                "-d",
                '{"model": "models/unknown"}',
                str(sock),
                "modelreg.v1.InferenceService/Predict",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode != 0 and "NotFound" in proc.stderr

        listed = wait_until(
            lambda: (
                (a := json.loads(cli("agents", "list", "-o", "json").stdout)["agents"])
                and a[0]["models"][0].get("versions")
                and a
            ),
            30,
            what="agent listed",
        )
        assert listed[0]["agentId"] == "uds-agent"
        assert listed[0]["address"] == f"unix:{sock}"
        assert listed[0]["healthy"] is True
        assert listed[0]["models"][0]["versions"][0]["state"] == "SERVED_VERSION_STATE_SERVING"
        assert "uds-agent" in cli("agents", "list").stdout
    finally:
        agent.stop()


def _start_without_listen(agent: AgentProcess):
    import os

    from agent_helpers import BIN

    def start():
        env = dict(os.environ, YOLO_OFFLINE="1", PYTHONUNBUFFERED="1")
        args = [
            str(BIN / "modelreg"),
            "agent",
            "--registry",
            agent.registry,
            "--cache-dir",
            str(agent.cache_dir),
            "--report-interval",
            "0.5",
        ]
        for m in agent.models:
            args += ["--model", m]
        args += agent.extra
        agent.proc = subprocess.Popen(
            args,
            env=env,
            stdout=open(agent.log_path, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        return agent

    return start


async def test_agent_core_in_process_as_a_library(client, registry, tmp_path):
    from serving_agent import Agent, AgentConfig

    v1 = client.register("lib", onnx_scale_model(4.0), filename="l.onnx")
    client.promote("lib", v1.version, "production")
    agent = Agent(
        AgentConfig(registry=registry.address, models=("lib",), cache_dir=tmp_path / "cache", agent_id="in-process")
    )
    await agent.start()
    try:
        await agent.wait_ready(60)
        result = await agent.predict("lib", {"x": np.full((2, 4), 2.0, np.float32)})
        assert result.model_version == "models/lib/versions/1"
        assert result.outputs["y"].tolist() == [[8.0] * 4] * 2
        status = agent.status()
        assert status.models[0].versions[0].request_count == 1
    finally:
        await agent.stop()


def test_cache_evicts_least_recently_used_unreferenced_blobs(tmp_path):
    import os

    cache = BlobCache(tmp_path, max_bytes=250)
    for i, name in enumerate(["a", "b", "c"]):
        p = cache.blobs / f"{name * 64}.onnx"
        p.write_bytes(b"x" * 100)
        os.utime(p, (1000 + i, 1000 + i))
    # "a" is the oldest but referenced (being served): "b" goes first.
    assert cache.evict(referenced={"a" * 64}) == ["b" * 64]
    assert cache.get("a" * 64) is not None and cache.get("c" * 64) is not None
    assert cache.size() == 200


async def test_unload_waits_for_in_flight_leases_to_drain(client, registry, tmp_path):
    import asyncio

    from serving_agent import Agent, AgentConfig
    from serving_agent.policy import State

    v1 = client.register("drain", onnx_scale_model(1.0), filename="d.onnx")
    client.promote("drain", v1.version, "production")
    # keep_warm=0: v1 unloads as soon as v2 serves (no warm standby), the path under test
    agent = Agent(AgentConfig(registry=registry.address, models=("drain",), cache_dir=tmp_path / "cache", keep_warm=0))
    await agent.start()
    try:
        await agent.wait_ready(60)
        mgr = agent.models["drain"]
        with mgr.lease() as held:  # a request in flight on v1
            assert held.version == 1
            v2 = await asyncio.to_thread(client.register, "drain", onnx_scale_model(2.0), filename="d.onnx")
            await asyncio.to_thread(client.promote, "drain", v2.version, "production")
            for _ in range(600):
                if 1 in mgr.versions and mgr.versions[1].state is State.UNLOADING:
                    break
                await asyncio.sleep(0.05)
            assert mgr.versions[1].state is State.UNLOADING
            assert mgr.versions[2].state is State.READY
            assert mgr.route().version == 2, "new requests go to v2 while v1 drains"
            await asyncio.sleep(0.3)
            assert held.loader is not None, "v1 was unloaded under a request in flight"
            outputs = await asyncio.to_thread(held.loader.predict, {"x": np.ones((1, 4), np.float32)})
            assert float(outputs["y"][0, 0]) == 1.0
        for _ in range(200):
            if 1 not in mgr.versions:
                break
            await asyncio.sleep(0.05)
        assert list(mgr.versions) == [2]
        assert held.loader is None
    finally:
        await agent.stop()


def test_ops_read_rollout_status_and_agents_with_grpcurl(client, registry):
    v = client.register("ops", onnx_scale_model(1.0), filename="o.onnx")
    client.promote("ops", v.version, "production")
    serving = ag.ServedVersion(version=1, sha256=v.artifact.sha256, state=ag.SERVED_VERSION_STATE_SERVING)
    report(registry.address, "edge-1", model="models/ops", versions=[serving])

    def grpcurl(method: str, body: str) -> dict:
        proc = subprocess.run(
            [str(GRPCURL), "-plaintext", "-d", body, registry.address, method],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    st = grpcurl("modelreg.v1.AgentService/GetRolloutStatus", '{"model": "models/ops"}')
    assert st["deployment"]["stable"]["version_number"] == "1" and st["complete"] is True
    assert st["agents"][0]["agent"] == "agents/edge-1"
    listed = grpcurl("modelreg.v1.AgentService/ListAgents", '{"model": "models/ops"}')
    assert [a["agent_id"] for a in listed["agents"]] == ["edge-1"]


def test_agent_cli_rejects_a_bad_model_id_with_usage_error():
    from conftest import run_cli

    proc = run_cli("agent", "--model", "Bad Name", address="127.0.0.1:1", check=False)
    assert proc.returncode == 2
    assert "--model 'Bad Name' is not a model id" in proc.stderr


def test_tensors_round_trip_through_the_wire_format_for_any_layout_and_byte_order():
    from modelreg.tensors import add_tensor, tensor_to_array
    from modelreg.v1 import inference_service_pb2 as inf

    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    cases = {
        "c": a,
        "transposed": a.transpose(2, 0, 1),
        "big_endian": a.astype(">f4"),
        "int64": np.arange(6, dtype=np.int64).reshape(3, 2),
        "bool": np.array([True, False]),
        "scalar": np.array(7.5, np.float64),
    }
    msg = inf.PredictRequest()
    for name, arr in cases.items():
        add_tensor(msg.inputs, name, arr)
    wire = inf.PredictRequest.FromString(msg.SerializeToString())
    for t in wire.inputs:
        got = tensor_to_array(t)
        np.testing.assert_array_equal(got, cases[t.name])
        assert got.dtype == cases[t.name].dtype.newbyteorder("=") and got.shape == cases[t.name].shape
