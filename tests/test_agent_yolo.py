"""YOLO round trip: yolov8n built from yolov8n.yaml (random weights, no download),
registered as `.pt` and as an exported `.onnx`, promoted, served through Detect by a real
agent process with ultralytics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from agent_helpers import AgentProcess, wait_until
from conftest import free_port

from modelreg import errors
from modelreg.oip import grpc_predict_v2_pb2 as pb
from modelreg.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from modelreg.signatures import tensor_text
from modelreg.v1 import resources_pb2 as res

pytest.importorskip("ultralytics")

IMGSZ = 64
BUILD = f"""
from ultralytics import YOLO
m = YOLO("yolov8n.yaml")
m.save("yolov8n.pt")
m.export(format="onnx", imgsz={IMGSZ}, simplify=False, dynamic=False)
"""


@pytest.fixture(scope="module")
def yolo_files(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("yolo")
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(d / "cfg"))
    subprocess.run([sys.executable, "-c", BUILD], cwd=d, env=env, check=True, capture_output=True, timeout=300)
    return d / "yolov8n.pt", d / "yolov8n.onnx"


def png(width: int = 96, height: int = 80) -> bytes:
    import cv2

    rng = np.random.default_rng(0)
    ok, data = cv2.imencode(".png", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    assert ok
    return data.tobytes()


@pytest.mark.slow
@pytest.mark.timeout(300)  # torch + ultralytics start-up in two processes on a busy 2-core machine
def test_yolo_pt_then_exported_onnx_served_through_detect(client, registry, yolo_files, tmp_path):
    pt, onnx_file = yolo_files
    v1 = client.register("detector", pt, model_type="yolov8n", config={"imgsz": IMGSZ})
    assert v1.format == 2  # ultralytics_pt, inferred from .pt
    client.promote("detector", v1.version, "production")
    agent = AgentProcess(
        registry.address,
        ["detector"],
        tmp_path / "cache",
        tmp_path / "agent.log",
        free_port(),
        extra=["--agent-id", "yolo"],
        env={"YOLO_CONFIG_DIR": str(tmp_path / "cfg")},
    ).start()
    try:
        agent.wait_serving(180)
        with agent.client() as c:
            d = c.detect("detector", png(), confidence=0.0001)
            assert d.model_version == "models/detector/versions/1"
            assert (d.image_width, d.image_height) == (96, 80)
            for box in d.detections:
                assert 0 <= box.class_id < 80 and box.class_name == str(box.class_id)
                assert 0.0001 <= box.confidence <= 1
                x1, y1, x2, y2 = box.xyxy
                assert -1 <= x1 <= x2 <= 97 and -1 <= y1 <= y2 <= 81
            with pytest.raises(errors.FailedPrecondition, match="call Detect"):
                c.predict("detector", {"images": np.zeros((1, 3, IMGSZ, IMGSZ), np.float32)})
            # the Open Inference Protocol describes the .pt's network, and refuses tensors the same way
            with grpc.insecure_channel(agent.address) as channel:
                oip = pb_grpc.GRPCInferenceServiceStub(channel)
                meta = oip.ModelMetadata(pb.ModelMetadataRequest(name="detector"))
                assert meta.platform == "ultralytics_pt" and list(meta.versions) == ["1"]
                assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
                    ("images", "FP32", [-1, 3, IMGSZ, IMGSZ])
                ]
                outputs = [(t.name, t.datatype, list(t.shape)) for t in meta.outputs]
                assert outputs == [("output0", "FP32", [-1, 84, -1])]
                req = pb.ModelInferRequest(model_name="detector")
                req.inputs.add(name="images", datatype="FP32", shape=[1, 3, IMGSZ, IMGSZ])
                req.raw_input_contents.append(bytes(4 * 3 * IMGSZ * IMGSZ))
                with pytest.raises(grpc.RpcError) as refused:
                    oip.ModelInfer(req)
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "register its ONNX export" in refused.value.details()
            with pytest.raises(errors.InvalidArgument, match="not a JPEG or PNG"):
                c.detect("detector", b"GIF89a not an image")

            # A .pt's signature comes from the agent's first load, reported back: the network
            # at imgsz 64, 84 = 4 box + 80 class rows over 8^2 + 4^2 + 2^2 anchors.
            learned = wait_until(
                lambda: (v := client.get_version("detector", 1)).HasField("signature") and v, 60, what="signature"
            ).signature
            assert learned.source == res.SIGNATURE_SOURCE_AGENT
            assert [tensor_text(t) for t in learned.inputs] == [f"images float32 [1, 3, {IMGSZ}, {IMGSZ}]"]
            assert [tensor_text(t) for t in learned.outputs] == ["output0 float32 [1, 84, 84]"]

            v2 = client.register("detector", onnx_file, model_type="yolov8n")
            assert v2.format == 1  # onnx
            # Its export reads the same from the graph: compare flags no breaking change.
            assert v2.signature.source == res.SIGNATURE_SOURCE_ARTIFACT
            assert [tensor_text(t) for t in v2.signature.inputs] == [tensor_text(t) for t in learned.inputs]
            assert [tensor_text(t) for t in v2.signature.outputs] == [tensor_text(t) for t in learned.outputs]
            assert not {v.version: v for v in client.compare("detector").versions}[2].signature_differs
            client.promote("detector", v2.version, "production")
            wait_until(
                lambda: c.detect("detector", png()).model_version == "models/detector/versions/2",
                120,
                what="the exported ONNX detector serving",
            )
            d2 = c.detect("detector", png(), confidence=0.0001, max_detections=5)
            assert d2.model_version == "models/detector/versions/2"
            # the export is a detector for Detect, and its graph takes tensors (Predict, ModelInfer)
            raw = c.predict("detector", {"images": np.zeros((1, 3, IMGSZ, IMGSZ), np.float32)})
            assert raw.model_version == "models/detector/versions/2" and raw.outputs["output0"].shape == (1, 84, 84)
            assert len(d2.detections) <= 5
            assert (d2.image_width, d2.image_height) == (96, 80)
        st = wait_until(lambda: (s := client.rollout_status("detector")).complete and s, 30, what="rollout complete")
        assert st.deployment.stable.version_number == 2
        wait_until(
            lambda: [v.version for v in client.rollout_status("detector").agents[0].versions] == [2],
            30,
            what="v1 unloaded",
        )
    finally:
        agent.stop()
