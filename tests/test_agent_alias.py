"""A real serving agent following a named alias (`modelreg agent --model scaler@champion`)
against a real registry: it serves the alias's version, not production's, swaps with zero
failed requests when the alias moves, unloads when the alias is deleted, and reads the
alias again after a restart."""

from __future__ import annotations

import subprocess

import numpy as np
from agent_helpers import BIN, Hammer, onnx_scale_model, serving_states, wait_until

from modelreg.v1 import agent_service_pb2 as ag


def predict_scale(agent, model: str) -> tuple[str, float]:
    with agent.client() as c:
        r = c.predict(model, {"x": np.ones((1, 4), np.float32)})
    return r.model_version, float(r.outputs["y"][0, 0])


def test_agent_follows_an_alias_and_swaps_when_it_moves(client, registry, agents):
    for scale in (1.0, 2.0, 3.0):
        client.register("scaler", onnx_scale_model(scale), filename="scaler.onnx")
    client.promote("scaler", 3, "production")  # production is v3: the agent must not serve it
    client.set_alias("scaler", "champion", 1, reason="first")

    agent = agents(registry.address, ["scaler@champion"])
    agent.wait_serving()
    assert predict_scale(agent, "scaler") == ("models/scaler/versions/1", 1.0)

    with Hammer(agent.address, "scaler") as hammer:
        wait_until(lambda: len(hammer.versions) >= 20, 30, what="requests on v1")
        client.set_alias("scaler", "champion", 2, reason="better")
        wait_until(
            lambda: serving_states(agent, "scaler") == {2: ag.SERVED_VERSION_STATE_SERVING},
            60,
            what="v2 serving alone after the alias moved",
        )
        n = len(hammer.versions)
        wait_until(lambda: len(hammer.versions) >= n + 20, 30, what="requests on v2")
        # A production change is not this agent's business.
        client.promote("scaler", 1, "production")
        m = len(hammer.versions)
        wait_until(lambda: len(hammer.versions) >= m + 20, 30, what="more requests")
    assert hammer.failures == []
    first_v2 = hammer.versions.index("models/scaler/versions/2")
    assert set(hammer.versions[:first_v2]) == {"models/scaler/versions/1"}
    assert set(hammer.versions[first_v2:]) == {"models/scaler/versions/2"}
    assert predict_scale(agent, "scaler") == ("models/scaler/versions/2", 2.0)

    # Restarted, it reads the alias from the registry, not only from its cache directory.
    agent.stop()
    client.set_alias("scaler", "champion", 3, reason="while the agent was down")
    again = agents(registry.address, ["scaler@champion"], name="a1", cache_dir=agent.cache_dir)
    again.wait_serving()
    wait_until(
        lambda: predict_scale(again, "scaler") == ("models/scaler/versions/3", 3.0), 60, what="v3 after the restart"
    )

    # Deleting the alias leaves nothing to serve.
    client.delete_alias("scaler", "champion", reason="retired")
    wait_until(lambda: serving_states(again, "scaler") == {}, 60, what="unloaded after the alias was deleted")
    assert "desired: models/scaler -> nothing to serve" in again.log()


def test_agent_model_flag_with_a_bad_alias_is_a_usage_error(tmp_path):
    for value, message in (
        ("scaler@latest", "not an alias an agent can follow"),
        ("scaler@eu prod", "not an alias an agent can follow"),
        ("Bad@champion", "is not a model id"),
    ):
        proc = subprocess.run(
            [str(BIN / "modelreg"), "agent", "--model", value, "--cache-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
    proc = subprocess.run(
        [str(BIN / "modelreg"), "agent", "--model", "scaler", "--model", "scaler@champion"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "given twice" in proc.stderr
