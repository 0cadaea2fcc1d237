"""Canaries end to end: a real registry, real `modelreg agent` processes under continuous
load, real onnxruntime. The split matches the weight, promote/abort/rollback fail no request,
and a canary that fails at run time is aborted by the registry by itself."""

from __future__ import annotations

import json
import threading
from collections import Counter

import numpy as np
import pytest
from agent_helpers import AgentProcess, Hammer, onnx_scale_model, serving_states, wait_until

from modelreg import Client
from modelreg.v1 import agent_service_pb2 as ag
from modelreg.v1 import deployment_service_pb2 as ds

X1 = {"x": np.ones((1, 4), np.float32)}
SERVING = ag.SERVED_VERSION_STATE_SERVING


def onnx_fails_for_batches_above_one() -> bytes:
    """y = reshape(x, [1, 4]): loads and warms up (batch 1), fails on any batch of 2 or more."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 4])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "fails", [x], [y], initializer=[shape]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def served(agent: AgentProcess, model: str, n: int) -> Counter:
    with agent.client() as c:
        return Counter(c.predict(model, X1).model_version.rsplit("/", 1)[-1] for _ in range(n))


def only(agent: AgentProcess, model: str, version: int, n: int = 300) -> bool:
    return served(agent, model, n) == Counter({str(version): n})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_canary_share_matches_the_weight(client, registry, agents):
    client.register("split", onnx_scale_model(1.0), filename="s.onnx")
    client.register("split", onnx_scale_model(2.0), filename="s.onnx")
    client.promote("split", 1, "production")
    agent = agents(registry.address, ["split"])
    agent.wait_serving()
    client.set_canary("split", 2, 10)
    wait_until(lambda: serving_states(agent, "split") == {1: SERVING, 2: SERVING}, 60, what="canary loaded")

    n = 10_000
    share = served(agent, "split", n)["2"]
    # 99.9 % binomial interval for p = 0.1: n p +- 3.29 sqrt(n p (1 - p)).
    half = 3.29 * (n * 0.1 * 0.9) ** 0.5
    assert n * 0.1 - half <= share <= n * 0.1 + half, share
    # Ops see the split in `modelreg deployment`, from the agent's reports.
    from conftest import run_cli

    def observed() -> dict | None:
        out = json.loads(run_cli("deployment", "split", "-o", "json", address=registry.address).stdout)
        counts = {v["version"]: int(v.get("requestCount", 0)) for v in out["rollout"]["agents"][0]["versions"]}
        # A report taken during the requests can already hold v2's final count while the last
        # few v1 requests are still to come: wait for one that covers all of them.
        return counts if counts.get("2", 0) >= share and counts.get("1", 0) >= n - share else None

    counts = wait_until(observed, 30, what="the agent's report of the whole split")
    assert counts["1"] >= n - share
    table = run_cli("deployment", "split", address=registry.address).stdout
    assert "SHARE" in table and "v2" in table

    client.set_canary("split", 2, 0)
    wait_until(lambda: only(agent, "split", 1), 30, what="weight 0 applied")
    assert served(agent, "split", 1000) == Counter({"1": 1000})
    client.set_canary("split", 2, 100)
    wait_until(lambda: only(agent, "split", 2), 30, what="weight 100 applied")
    assert served(agent, "split", 1000) == Counter({"2": 1000})
    # A weight change reloads nothing: both versions stayed loaded throughout.
    assert serving_states(agent, "split") == {1: SERVING, 2: SERVING}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_promote_abort_and_rollback_fail_no_request_under_load(client, registry, agents):
    for scale in (1.0, 2.0, 3.0):
        client.register("live", onnx_scale_model(scale), filename="l.onnx")
    client.promote("live", 1, "production")
    agent = agents(registry.address, ["live"])
    agent.wait_serving()

    def recent_only(hammer: Hammer, version: int, n: int = 100) -> bool:
        tail = hammer.versions[-n:]
        return len(tail) == n and set(tail) == {f"models/live/versions/{version}"}

    with Hammer(agent.address, "live") as hammer:
        client.set_canary("live", 2, 20, reason="try v2")
        wait_until(lambda: "models/live/versions/2" in hammer.versions, 60, what="canary serving")
        client.promote_canary("live", reason="v2 is good")
        wait_until(lambda: recent_only(hammer, 2), 60, what="v2 promoted")

        client.set_canary("live", 3, 50, reason="try v3")
        wait_until(lambda: hammer.versions[-20:].count("models/live/versions/3") > 0, 60, what="v3 canary")
        client.abort_canary("live", reason="v3 looks off")
        wait_until(lambda: recent_only(hammer, 2), 60, what="canary aborted")

        client.rollback("live", reason="v2 regressed")
        wait_until(lambda: recent_only(hammer, 1), 60, what="rolled back to v1")

        client.rollback("live", to_version=3, reason="pin v3")
        wait_until(lambda: recent_only(hammer, 3), 60, what="rolled back to the named v3")
        total = len(hammer.versions)
    assert hammer.failures == [], hammer.failures[:5]
    assert total > 500
    assert client.get_version("live", "production").version == 3


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_failing_canary_is_aborted_automatically_and_every_agent_returns_to_stable(make_registry, agents):
    registry = make_registry(canary_judge_interval=0.5)
    client = Client(registry.address, actor="tester")
    client.register("guarded", onnx_scale_model(1.0), filename="g.onnx")
    client.register("guarded", onnx_fails_for_batches_above_one(), filename="bad.onnx")
    client.promote("guarded", 1, "production")
    client.set_canary_policy("guarded", max_error_rate=0.2, min_requests=20)
    agents = [agents(registry.address, ["guarded"], name=f"node-{i}") for i in range(2)]
    for a in agents:
        a.wait_serving()

    x2 = {"x": np.ones((2, 4), np.float32)}  # the canary fails on batches of two
    stop = threading.Event()
    outcomes: dict[str, list[str]] = {a.address: [] for a in agents}

    def load(agent: AgentProcess) -> None:
        with agent.client() as c:
            while not stop.is_set():
                try:
                    outcomes[agent.address].append(c.predict("guarded", x2).model_version)
                except Exception as e:  # noqa: BLE001 - the canary's failures are the point
                    outcomes[agent.address].append(f"error: {e}")

    threads = [threading.Thread(target=load, args=(a,), daemon=True) for a in agents]
    for t in threads:
        t.start()
    try:
        client.set_canary("guarded", 2, 50, reason="try the new graph")

        def aborted():
            return next(
                (e for e in client.deployment_history("guarded") if e.action == ds.DEPLOYMENT_ACTION_AUTO_ABORT), None
            )

        entry = wait_until(aborted, 90, what="the judge to abort the canary")
        assert entry.actor == "modelreg-canary-judge"
        assert "error rate" in entry.reason
        assert (entry.before.canary.version_number, entry.after.canary.version_number) == (2, 0)
        assert client.get_deployment("guarded").canary.version_number == 0

        def back_on_stable(a: AgentProcess) -> bool:
            tail = outcomes[a.address][-50:]
            return len(tail) == 50 and set(tail) == {"models/guarded/versions/1"}

        for a in agents:
            wait_until(lambda a=a: back_on_stable(a), 60, what=f"{a.address} back on stable only")
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        client.close()
    # Failures came from the canary only, never from the stable version.
    for a in agents:
        assert any(o.startswith("error") for o in outcomes[a.address]), "the canary never failed on this agent"
