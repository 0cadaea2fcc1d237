"""The agent following deployments (stable + canary by weight, sticky routing keys), health
across several models, and a watch cursor the registry no longer knows (RESYNC_REQUIRED)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from agent_helpers import onnx_scale_model, serving_states, wait_until

from modelreg.v1 import agent_service_pb2 as ag

X = {"x": np.ones((1, 4), np.float32)}


def test_canary_weight_and_sticky_routing_keys(client, registry, agents):
    v1 = client.register("can", onnx_scale_model(1.0), filename="c.onnx")
    client.promote("can", v1.version, "production")
    v2 = client.register("can", onnx_scale_model(2.0), filename="c.onnx")
    agent = agents(registry.address, ["can"])
    agent.wait_serving()
    client.set_canary("can", v2.version, 30)
    serving = ag.SERVED_VERSION_STATE_SERVING
    wait_until(lambda: serving_states(agent, "can") == {1: serving, 2: serving}, 60, what="stable and canary loaded")

    with agent.client() as c:
        sticky = {key: c.predict("can", X, routing_key=key).model_version for key in (f"user-{i}" for i in range(200))}
        for key, version in list(sticky.items())[:50]:
            assert c.predict("can", X, routing_key=key).model_version == version, "a routing key switched versions"
    st = wait_until(lambda: (s := client.rollout_status("can")).complete and s, 30, what="canary rollout observed")
    d = st.deployment
    assert (d.stable.version_number, d.canary.version_number, d.canary_weight) == (1, 2, 30)
    share = Counter(sticky.values())
    assert set(share) == {"models/can/versions/1", "models/can/versions/2"}
    assert 20 <= share["models/can/versions/2"] <= 100, share  # 30% of 200 keys, hashed

    client.promote_canary("can")
    wait_until(lambda: serving_states(agent, "can") == {2: serving}, 60, what="canary promoted, v1 unloaded")
    st = wait_until(lambda: (s := client.rollout_status("can")).complete and s, 30, what="promotion observed")
    assert st.deployment.stable.version_number == 2 and not st.deployment.HasField("canary")
    with agent.client() as c:
        assert c.predict("can", X, routing_key="user-1").model_version == "models/can/versions/2"


def test_health_serving_only_once_every_model_has_a_version(client, registry, agents):
    v = client.register("first", onnx_scale_model(1.0), filename="f.onnx")
    client.promote("first", v.version, "production")
    client.create_model("second")
    agent = agents(registry.address, ["first", "second"])
    with agent.client() as c:
        wait_until(
            lambda: c.predict("first", X).model_version == "models/first/versions/1", 60, what="first model serving"
        )
        assert not c.is_serving(), "SERVING although models/second has no version"
        w = client.register("second", onnx_scale_model(2.0), filename="s.onnx")
        client.promote("second", w.version, "production")
        wait_until(c.is_serving, 60, what="SERVING once both models have a version")
        assert c.predict("second", X).model_version == "models/second/versions/1"


def test_unknown_watch_cursor_resyncs_from_the_snapshot(client, registry, agents, tmp_path):
    v = client.register("resync", onnx_scale_model(9.0), filename="r.onnx")
    client.promote("resync", v.version, "production")
    cache = tmp_path / "cache-cursor"
    cache.mkdir()
    (cache / "state.json").write_text(json.dumps({"sequence": 999999, "models": {}}))
    agent = agents(registry.address, ["resync"], name="cursor")
    agent.wait_serving()
    with agent.client() as c:
        assert c.predict("resync", X).model_version == "models/resync/versions/1"
    assert "RESYNC_REQUIRED" in agent.log()
    saved = json.loads((cache / "state.json").read_text())
    assert saved["sequence"] < 999999
    assert saved["models"]["resync"]["stable"]["version"] == 1
