"""The agent against a registry on a real S3 server (SeaweedFS): it downloads straight
from the store through a presigned URL, and verifies the bytes itself, so an object
altered in the bucket (which the registry never sees) is refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from agent_helpers import AgentProcess, onnx_scale_model, wait_until
from conftest import free_port

from modelreg import Client
from modelreg.v1 import agent_service_pb2 as ag


@pytest.fixture
def s3_registry(make_registry, seaweedfs, s3_bucket):  # noqa: F811
    return make_registry(**seaweedfs.registry_settings(s3_bucket))


def test_agent_downloads_through_presigned_url_and_refuses_an_altered_object(
    s3_registry,
    seaweedfs,
    s3_bucket,
    tmp_path,  # noqa: F811
):
    with Client(s3_registry.address, actor="tester") as c:
        v1 = c.register("s3m", onnx_scale_model(1.0), filename="s.onnx")
        c.promote("s3m", v1.version, "production")
        agent = AgentProcess(
            s3_registry.address,
            ["s3m"],
            tmp_path / "cache",
            tmp_path / "agent.log",
            free_port(),
            extra=["--agent-id", "s3-agent"],
        ).start()
        try:
            agent.wait_serving()
            assert "versions/1: downloading from the store through a presigned URL" in agent.log()

            v2 = c.register("s3m", onnx_scale_model(2.0), filename="s.onnx")
            evil = onnx_scale_model(666.0)
            seaweedfs.client().put_object(
                s3_bucket, f"artifacts/sha256/{v2.artifact.sha256}", io.BytesIO(evil), len(evil)
            )
            c.promote("s3m", v2.version, "production")

            def refused():
                st = c.rollout_status("s3m")
                vs = {v.version: v for v in st.agents[0].versions} if st.agents else {}
                return vs if 2 in vs and vs[2].state == ag.SERVED_VERSION_STATE_FAILED else None

            vs = wait_until(refused, 60, what="v2 refused")
            assert f"registered sha256 {v2.artifact.sha256}" in vs[2].error
            assert vs[1].state == ag.SERVED_VERSION_STATE_SERVING
            with agent.client() as ic:
                r = ic.predict("s3m", {"x": np.ones((1, 4), np.float32)})
            assert (r.model_version, float(r.outputs["y"][0, 0])) == ("models/s3m/versions/1", 1.0)
            assert not (tmp_path / "cache" / "blobs" / f"{v2.artifact.sha256}.onnx").exists()
        finally:
            agent.stop()
