"""The stock Open Inference Protocol client, tritonclient[grpc], against a real agent fed by a
real registry: metadata, a float32 ONNX model through `infer` with raw contents, YOLOv8n exported
to ONNX, a canary split over 2,000 requests, pinned versions, and the errors.

tritonclient pins an older protobuf than our stubs, so it runs in its own venv
(benchmarks.env.ensure_triton_venv: created once under $TMPDIR, reused) through
tests/oip_triton_client.py; this test drives the registry and checks what the client saw."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from agent_helpers import onnx_scale_model, serving_states, wait_until

from benchmarks.env import TRITON_VENV, ensure_triton_venv
from modelreg.oip import grpc_predict_v2_pb2 as pb
from modelreg.v1 import agent_service_pb2 as ag

pytest.importorskip("ultralytics")  # for the export only

CLIENT = Path(__file__).with_name("oip_triton_client.py")
IMGSZ = 64
WEIGHT = 30
N = 2000
EXPORT = f"""
from ultralytics import YOLO
print(YOLO("yolov8n.yaml").export(format="onnx", imgsz={IMGSZ}, simplify=False, dynamic=False))
"""


def yolo_export(tmp: Path) -> Path:
    """YOLOv8n (random weights) exported to ONNX at IMGSZ, its ultralytics metadata removed as in
    benchmarks/bench_agent.py, so the agent serves the graph with onnxruntime alone (no torch to
    start: test_agent_yolo covers tensors on an export kept as a detector). Exporting takes ~20 s
    on a busy machine, so the file is cached beside the tritonclient venv, per ultralytics version."""
    import fcntl
    from importlib.metadata import version

    import onnx

    name = f"yolov8n-{IMGSZ}-plain-ultralytics-{version('ultralytics')}.onnx"
    cached = TRITON_VENV.parent / "modelreg-test-cache" / name
    cached.parent.mkdir(parents=True, exist_ok=True)
    with open(cached.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cached.exists():
            work = tmp / "yolo"
            work.mkdir()
            env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(work / "cfg"))
            out = subprocess.run(
                [sys.executable, "-c", EXPORT], cwd=work, env=env, capture_output=True, text=True, timeout=300
            )
            assert out.returncode == 0, out.stderr[-2000:]
            model = onnx.load(str(work / out.stdout.strip().splitlines()[-1]))
            del model.metadata_props[:]
            partial = cached.with_suffix(".partial")
            partial.write_bytes(model.SerializeToString())
            partial.rename(cached)
    return cached


def triton(address: str, steps: list[dict], tmp: Path) -> list[dict]:
    py = ensure_triton_venv()
    spec = tmp / f"steps-{os.getpid()}-{id(steps)}.json"
    spec.write_text(json.dumps(steps))
    out = subprocess.run([str(py), str(CLIENT), address, str(spec)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def npy(tmp: Path, name: str, a: np.ndarray) -> str:
    path = tmp / f"{name}.npy"
    np.save(path, a)
    return str(path)


@pytest.mark.slow
@pytest.mark.timeout(400)  # a first run builds the tritonclient venv (pip) and the export; later runs reuse them
def test_tritonclient_drives_the_agent(client, registry, agents, tmp_path):
    ensure_triton_venv()
    yolo_onnx = yolo_export(tmp_path)
    v1 = client.register("tri", onnx_scale_model(1.0), filename="t.onnx")
    client.promote("tri", v1.version, "production")
    v2 = client.register("tri", onnx_scale_model(2.0), filename="t.onnx")
    y1 = client.register("yolo", yolo_onnx, model_type="yolov8n", filename="yolov8n.onnx")
    client.promote("yolo", y1.version, "production")
    agent = agents(registry.address, ["tri", "yolo"])
    agent.wait_serving(120)

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    xs = [{"name": "x", "npy": npy(tmp_path, "x", x)}]
    save = tmp_path / "out"
    save.mkdir()
    (save / "yolo").mkdir()
    r = triton(
        agent.address,
        [
            {"op": "fields"},
            {"op": "server"},
            {"op": "model_ready", "model": "tri"},
            {"op": "model_ready", "model": "tri", "version": "2"},
            {"op": "model_metadata", "model": "tri"},
            {"op": "model_metadata", "model": "yolo"},
            {"op": "infer", "model": "tri", "inputs": xs, "save": str(save)},
            {
                "op": "infer",
                "model": "yolo",
                "inputs": [{"name": "images", "npy": npy(tmp_path, "img", image)}],
                "save": str(save / "yolo"),
            },
            {"op": "infer", "model": "nope", "inputs": xs, "save": str(save)},
            {
                "op": "infer",
                "model": "tri",
                "inputs": [{"name": "x", "npy": npy(tmp_path, "xi", x.astype(np.int64))}],
                "save": str(save),
            },
            {
                "op": "infer",
                "model": "tri",
                "inputs": [{"name": "x", "npy": npy(tmp_path, "x3", x[:, :3].copy())}],
                "save": str(save),
            },
            {"op": "infer", "model": "tri", "version": "2", "inputs": xs, "save": str(save)},
        ],
        tmp_path,
    )
    fields, server, ready, ready2, meta, ymeta, infer, yinfer, unknown, dtype, shape, unpinned = r

    # Our vendored proto is wire-identical to tritonclient's for every message and RPC we serve.
    theirs = fields["messages"]
    for name, method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name.items():
        assert fields["methods"][name] == [method.input_type.full_name, method.output_type.full_name]
    ours = list(pb.DESCRIPTOR.message_types_by_name.values())
    ours += [n for m in ours for n in m.nested_types]
    for m in ours:
        for f in m.fields:
            assert theirs[m.full_name][f.name] == f.number, f"{m.full_name}.{f.name}"

    assert server["live"] and server["ready"] and server["metadata"]["name"] == "modelreg-agent"
    assert ready == {"ready": True} and ready2 == {"ready": False}
    assert meta["name"] == "tri" and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert ymeta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": ["1", "3", str(IMGSZ), str(IMGSZ)]}]
    assert ymeta["outputs"][0]["name"] == "output0" and ymeta["outputs"][0]["datatype"] == "FP32"

    assert infer["model_name"] == "tri" and infer["model_version"] == "1" and infer["raw"] == 1
    assert infer["outputs"]["y"]["datatype"] == "FP32" and infer["outputs"]["y"]["shape"] == [3, 4]
    np.testing.assert_array_equal(np.load(infer["outputs"]["y"]["npy"]), x)

    import onnxruntime as ort  # the same export in-process: the agent answers what the graph computes

    expected = ort.InferenceSession(str(yolo_onnx), providers=["CPUExecutionProvider"]).run(None, {"images": image})[0]
    got = np.load(yinfer["outputs"]["output0"]["npy"])
    assert yinfer["model_version"] == "1" and got.shape == expected.shape == (1, 84, 84)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)

    assert unknown["error"]["status"] == "StatusCode.NOT_FOUND"
    assert "does not serve 'nope'" in unknown["error"]["message"] and "models/tri" in unknown["error"]["message"]
    assert dtype["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "input 'x' of models/tri/versions/1: expected FP32 (float32) with shape [-1, 4]" in dtype["error"]["message"]
    assert "got INT64 with shape [3, 4]" in dtype["error"]["message"]
    assert shape["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "input 'x'" in shape["error"]["message"] and "[-1, 4]" in shape["error"]["message"]
    assert "got FP32 (float32) with shape [3, 3]" in shape["error"]["message"]
    assert unpinned["error"]["status"] == "StatusCode.NOT_FOUND"
    assert "models/tri/versions/2 is not loaded" in unpinned["error"]["message"]
    assert "loaded versions: 1" in unpinned["error"]["message"]

    # The canary: 2,000 requests with fresh routing keys (seeded) split within the 99.9 % interval
    # of the weight; a key sticks to its version; pinned versions answer from themselves.
    client.set_canary("tri", v2.version, WEIGHT)
    serving = ag.SERVED_VERSION_STATE_SERVING
    wait_until(lambda: serving_states(agent, "tri") == {1: serving, 2: serving}, 60, what="stable and canary loaded")
    split, pin1, pin2, meta2 = triton(
        agent.address,
        [
            {"op": "split", "model": "tri", "n": N, "seed": 0, "inputs": xs, "repeat": 200},
            {"op": "infer", "model": "tri", "version": "1", "inputs": xs, "save": str(save)},
            {"op": "infer", "model": "tri", "version": "2", "inputs": xs, "save": str(save)},
            {"op": "model_metadata", "model": "tri", "version": "2"},
        ],
        tmp_path,
    )
    p = WEIGHT / 100
    half = 3.2905 * math.sqrt(N * p * (1 - p))  # z of a two-sided 99.9 % interval
    assert set(split["counts"]) == {"1", "2"} and sum(split["counts"].values()) == N
    assert abs(split["counts"]["2"] - N * p) <= half, split["counts"]
    assert split["switched"] == 0
    assert pin1["model_version"] == "1" and pin2["model_version"] == "2"
    np.testing.assert_array_equal(np.load(pin2["outputs"]["y"]["npy"]), x * 2)
    assert meta2["versions"] == ["1", "2"]
