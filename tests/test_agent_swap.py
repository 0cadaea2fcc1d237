"""The serving agent as a real process against a real registry: hot swaps with zero failed
requests, refused artifacts, status reports and `modelreg status`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from agent_helpers import Hammer, agent_metrics, onnx_scale_model, serving_states, wait_until
from conftest import free_port
from onnx_helpers import onnx_unknown_op

from modelreg import errors
from modelreg.v1 import agent_service_pb2 as ag


def test_promote_v2_under_load_swaps_with_zero_failed_requests(client, registry, agents, cli):
    v1 = client.register("scaler", onnx_scale_model(1.0), filename="scaler.onnx")
    client.promote("scaler", v1.version, "production")
    agent = agents(registry.address, ["scaler"])
    agent.wait_serving()

    with Hammer(agent.address, "scaler") as hammer:
        wait_until(lambda: len(hammer.versions) >= 20, 30, what="requests on v1")
        v2 = client.register("scaler", onnx_scale_model(2.0), filename="scaler.onnx")
        client.promote("scaler", v2.version, "production", reason="better")
        wait_until(
            lambda: serving_states(agent, "scaler") == {2: ag.SERVED_VERSION_STATE_SERVING},
            60,
            what="v1 unloaded, only v2 serving",
        )
        n = len(hammer.versions)
        wait_until(lambda: len(hammer.versions) >= n + 20, 30, what="requests on v2")

    assert hammer.failures == []
    assert hammer.versions[0] == "models/scaler/versions/1"
    assert hammer.versions[-1] == "models/scaler/versions/2"
    first_v2 = hammer.versions.index("models/scaler/versions/2")
    assert set(hammer.versions[first_v2:]) == {"models/scaler/versions/2"}, "a request went back to v1 after the swap"
    assert {s for s, v in zip(hammer.scales, hammer.versions, strict=True) if v.endswith("/1")} == {1.0}
    assert {s for s, v in zip(hammer.scales, hammer.versions, strict=True) if v.endswith("/2")} == {2.0}

    def complete():
        st = json.loads(cli("status", "scaler", "-o", "json").stdout)
        # reports arrive every 0.5 s: wait for the one that counts the requests sent above
        counted = st.get("agents") and int(st["agents"][0]["versions"][0].get("requestCount", 0)) >= 20
        return st if st.get("complete") and counted else None

    st = wait_until(complete, 30, what="rollout complete with the requests counted")
    assert st["deployment"]["stable"]["versionNumber"] == "2"
    assert st["agents"][0]["agent"] == "agents/a1"
    assert [v["version"] for v in st["agents"][0]["versions"]] == ["2"]
    table = cli("status", "scaler").stdout
    assert "complete  yes" in table and "v2:serving" in table


def test_corrupt_onnx_promoted_keeps_v1_and_reports_failed(client, registry, agents, cli):
    v1 = client.register("clf", onnx_scale_model(1.0), filename="clf.onnx")
    client.promote("clf", v1.version, "production")
    agent = agents(registry.address, ["clf"])
    agent.wait_serving()
    with pytest.raises(errors.InvalidArgument, match="clf.onnx is not an ONNX model"):
        client.register("clf", b"this is not an onnx graph" * 10, filename="clf.onnx", format="onnx")
    # A well-formed ONNX file the registry accepts but onnxruntime cannot load.
    bad = client.register("clf", onnx_unknown_op(), filename="clf.onnx", format="onnx")
    client.promote("clf", bad.version, "production")

    def failed():
        st = client.rollout_status("clf")
        vs = {v.version: v for v in st.agents[0].versions} if st.agents else {}
        return vs if 2 in vs and vs[2].state == ag.SERVED_VERSION_STATE_FAILED else None

    vs = wait_until(failed, 60, what="v2 reported FAILED")
    assert vs[2].error.startswith("load failed: "), vs[2].error
    assert "INVALID_GRAPH" in vs[2].error and "NoSuchOp" in vs[2].error  # onnxruntime's own reason
    assert vs[1].state == ag.SERVED_VERSION_STATE_SERVING
    with agent.client() as c:
        r = c.predict("clf", {"x": np.ones((2, 4), np.float32)})
    assert r.model_version == "models/clf/versions/1"
    st = client.rollout_status("clf")
    assert st.deployment.stable.version_number == 2 and not st.complete
    table = cli("status", "clf").stdout
    assert "v2:failed (load failed" in table
    assert "complete  no" in table


def test_bytes_not_matching_registered_sha256_are_refused(client, registry, agents):
    v1 = client.register("tamper", onnx_scale_model(1.0), filename="t.onnx")
    client.promote("tamper", v1.version, "production")
    agent = agents(registry.address, ["tamper"])
    agent.wait_serving()
    # Corrupt v2's blob in the registry's artifact directory: the registry streams it and
    # ends the stream with DATA_LOSS; the agent must not load what it received.
    v2 = client.register("tamper", onnx_scale_model(3.0), filename="t.onnx")
    blob = next(p for p in (Path(registry.settings.artifacts)).rglob(v2.artifact.sha256 + "*") if p.is_file())
    blob.write_bytes(onnx_scale_model(4.0))
    client.promote("tamper", v2.version, "production")

    def failed():
        st = client.rollout_status("tamper")
        vs = {v.version: v for v in st.agents[0].versions}
        return vs if 2 in vs and vs[2].state == ag.SERVED_VERSION_STATE_FAILED else None

    vs = wait_until(failed, 60, what="v2 refused")
    assert "DATA_LOSS" in vs[2].error or "sha256" in vs[2].error
    with agent.client() as c:
        assert c.predict("tamper", {"x": np.ones((1, 4), np.float32)}).model_version == "models/tamper/versions/1"
    assert not list(agent.cache_dir.joinpath("blobs").glob(v2.artifact.sha256 + ".onnx"))


def test_tampered_cache_file_is_refused_and_downloaded_again(client, registry, agents, tmp_path):
    v1 = client.register("cached", onnx_scale_model(5.0), filename="c.onnx")
    client.promote("cached", v1.version, "production")
    cache = tmp_path / "shared-cache"
    agent = agents(registry.address, ["cached"], name="first", cache_dir=cache)
    agent.wait_serving()
    agent.stop()
    blob = cache / "blobs" / f"{v1.artifact.sha256}.onnx"
    assert blob.exists()
    blob.write_bytes(onnx_scale_model(6.0))  # same shape, wrong bytes: would serve wrong answers

    agent2 = agents(registry.address, ["cached"], name="second", cache_dir=cache)
    agent2.wait_serving()
    with agent2.client() as c:
        r = c.predict("cached", {"x": np.ones((1, 4), np.float32)})
    assert float(r.outputs["y"][0, 0]) == 5.0, "the tampered cache file was served"
    assert "hashes to" in agent2.log() and "refused" in agent2.log()


def test_inference_errors_are_canonical_statuses(client, registry, agents):
    v1 = client.register("errs", onnx_scale_model(1.0), filename="e.onnx")
    client.promote("errs", v1.version, "production")
    agent = agents(registry.address, ["errs"], extra=["--metrics-port", str(free_port())])
    agent.wait_serving()
    with agent.client() as c:
        with pytest.raises(errors.NotFound, match="does not serve"):
            c.predict("other", {"x": np.ones((1, 4), np.float32)})
        with pytest.raises(errors.InvalidArgument, match="takes inputs"):
            c.predict("errs", {"z": np.ones((1, 4), np.float32)})
        dtype_error = r"input 'x' .*expected FP32 \(float32\) with shape \[-1, 4\].*got INT64 with shape \[1, 4\]"
        with pytest.raises(errors.InvalidArgument, match=dtype_error):
            c.predict("errs", {"x": np.ones((1, 4), np.int64)})
        with pytest.raises(errors.FailedPrecondition, match="call Predict"):
            c.detect("errs", b"\x89PNG")
        r = c.predict("errs", {"x": np.arange(8, dtype=np.float32).reshape(2, 4)})
        np.testing.assert_array_equal(r.outputs["y"], np.arange(8, dtype=np.float32).reshape(2, 4))
    m = agent_metrics(int(agent.extra[agent.extra.index("--metrics-port") + 1]))
    assert m['modelreg_inference_requests_total{model="errs",version="1",outcome="ok"}'] == 1
    assert m['modelreg_inference_requests_total{model="errs",version="1",outcome="INVALID_ARGUMENT"}'] == 2
    assert m['modelreg_inference_duration_seconds_count{model="errs",version="1"}'] == 3
    assert m['modelreg_inference_compute_duration_seconds_count{model="errs",version="1"}'] == 3
    assert m['modelreg_inference_payload_bytes_sum{model="errs",version="1",direction="in"}'] == 32
    assert m['modelreg_agent_swaps_total{model="errs"}'] == 1
    assert m["modelreg_agent_ready"] == 1
