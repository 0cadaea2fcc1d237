"""The agent's grpc.health.v1: "" (and InferenceService) SERVING once every followed model has
a version loaded, and each model's own name SERVING once that model has one."""

from __future__ import annotations

import grpc
import pytest
from agent_helpers import onnx_scale_model, wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelreg import Client

pytestmark = pytest.mark.timeout(120)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health(address: str) -> dict[str, int]:
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        names = ("", "modelreg.v1.InferenceService", "ready", "pending")
        return {n: stub.Check(health_pb2.HealthCheckRequest(service=n), timeout=5).status for n in names}


def test_agent_reports_health_per_followed_model(registry, agents):
    c = Client(registry.address, actor="t")
    v = c.register("ready", onnx_scale_model(2.0), format="onnx")
    c.promote("ready", v.version, "production")
    c.create_model("pending")
    agent = agents(registry.address, ["ready", "models/pending"])
    want = {"": NOT_SERVING, "modelreg.v1.InferenceService": NOT_SERVING, "ready": SERVING, "pending": NOT_SERVING}
    wait_until(lambda: health(agent.address) == want, timeout=60, what=f"per-model health {want}")

    p = c.register("pending", onnx_scale_model(3.0), format="onnx")
    c.promote("pending", p.version, "production")
    wait_until(lambda: set(health(agent.address).values()) == {SERVING}, timeout=60, what="every name SERVING")
    c.close()
