"""Warm standby: the version an agent served before the last swap stays loaded (bounded by
MODELREG_AGENT_KEEP_WARM, default 1), so a rollback to it is served at once with no new
download or load. Real `modelreg agent` processes against a real registry."""

from __future__ import annotations

import os
import subprocess

import pytest
from agent_helpers import Hammer, agent_metrics, onnx_scale_model, serving_states, wait_until
from conftest import BIN, free_port

from modelreg.v1 import agent_service_pb2 as ag

SERVING = ag.SERVED_VERSION_STATE_SERVING


def test_rollback_is_served_from_warm_standby_without_a_new_load(client, registry, agents, cli):
    v1 = client.register("warm", onnx_scale_model(1.0), filename="w.onnx")
    client.promote("warm", v1.version, "production")
    port = free_port()
    agent = agents(registry.address, ["warm"], extra=["--metrics-port", str(port)])
    agent.wait_serving()
    v2 = client.register("warm", onnx_scale_model(2.0), filename="w.onnx")
    client.promote("warm", v2.version, "production")
    # v1 stays loaded but takes no requests: it is not reported as serving
    wait_until(lambda: serving_states(agent, "warm") == {2: SERVING}, 60, what="only v2 serving")
    m = agent_metrics(port)
    assert m['modelreg_agent_loads_total{model="warm"}'] == 2
    assert m['modelreg_agent_standby_versions{model="warm"}'] == 1

    with Hammer(agent.address, "warm") as hammer:
        wait_until(lambda: len(hammer.versions) >= 20, 30, what="requests on v2")
        client.promote("warm", v1.version, "production", reason="rollback")
        wait_until(lambda: hammer.versions[-1].endswith("/1"), 30, what="the rollback served")
        n = len(hammer.versions)
        wait_until(lambda: len(hammer.versions) >= n + 20, 30, what="requests on v1 again")
    assert hammer.failures == []
    first_v1 = hammer.versions.index("models/warm/versions/1")
    assert set(hammer.versions[first_v1:]) == {"models/warm/versions/1"}
    assert {s for s, v in zip(hammer.scales, hammer.versions, strict=True) if v.endswith("/1")} == {1.0}

    m = agent_metrics(port)
    assert m['modelreg_agent_loads_total{model="warm"}'] == 2, "the rollback downloaded or loaded v1 again"
    assert m['modelreg_agent_swaps_total{model="warm"}'] == 3
    assert m['modelreg_agent_standby_versions{model="warm"}'] == 1, "v2 is the warm standby now"
    assert "serving again from warm standby" in agent.log()
    assert serving_states(agent, "warm") == {1: SERVING}
    wait_until(lambda: "complete  yes" in cli("status", "warm").stdout, 30, what="rollout complete on v1")

    # A third version: v1 (served last) stays warm, v2 unloads; at most one standby.
    v3 = client.register("warm", onnx_scale_model(3.0), filename="w.onnx")
    client.promote("warm", v3.version, "production")
    wait_until(lambda: serving_states(agent, "warm") == {3: SERVING}, 60, what="only v3 serving")
    wait_until(
        lambda: 'modelreg_agent_version_state{model="warm",version="2",state="ready"}' not in agent_metrics(port),
        30,
        what="v2 unloaded",
    )
    m = agent_metrics(port)
    assert m['modelreg_agent_loads_total{model="warm"}'] == 3
    assert m['modelreg_agent_standby_versions{model="warm"}'] == 1
    assert m['modelreg_agent_version_state{model="warm",version="1",state="ready"}'] == 1


def test_keep_warm_zero_unloads_and_a_rollback_loads_again(client, registry, agents):
    v1 = client.register("cold", onnx_scale_model(1.0), filename="c.onnx")
    client.promote("cold", v1.version, "production")
    port = free_port()
    agent = agents(
        registry.address,
        ["cold"],
        extra=["--metrics-port", str(port), "--keep-warm", "0"],
        env={"MODELREG_AGENT_KEEP_WARM": "3"},
    )  # the flag wins over the environment
    agent.wait_serving()
    assert "keep warm" in agent.log() and "off" in agent.log()
    v2 = client.register("cold", onnx_scale_model(2.0), filename="c.onnx")
    client.promote("cold", v2.version, "production")
    wait_until(
        lambda: 'modelreg_agent_version_state{model="cold",version="1",state="ready"}' not in agent_metrics(port),
        60,
        what="v1 unloaded",
    )
    assert agent_metrics(port)['modelreg_agent_standby_versions{model="cold"}'] == 0
    client.promote("cold", v1.version, "production", reason="rollback")
    wait_until(lambda: serving_states(agent, "cold") == {1: SERVING}, 60, what="v1 serving again")
    assert agent_metrics(port)['modelreg_agent_loads_total{model="cold"}'] == 3


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--keep-warm", "-1"], {}, "--keep-warm must not be negative"),
        ([], {"MODELREG_AGENT_KEEP_WARM": "two"}, "MODELREG_AGENT_KEEP_WARM='two' is not a whole number"),
    ],
)
def test_a_bad_keep_warm_is_a_usage_error(args, env, message):
    out = subprocess.run(
        [str(BIN / "modelreg"), "agent", "--model", "m", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert out.returncode == 2
    assert message in out.stderr
