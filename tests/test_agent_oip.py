"""The Open Inference Protocol (inference.GRPCInferenceService) on a real agent fed by a real
registry, driven through our own generated stubs (modelreg.oip): every route, both content
encodings, routing and pinning, and the errors a caller sees. The stock client (tritonclient,
in its own venv) drives the same agent in test_agent_oip_triton.py."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from agent_helpers import onnx_scale_model, serving_states, wait_until

from modelreg.oip import grpc_predict_v2_pb2 as pb
from modelreg.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from modelreg.v1 import agent_service_pb2 as ag
from serving_agent.errors import BadInput
from serving_agent.oip_tensors import decode_inputs, encode_outputs

X = np.arange(8, dtype=np.float32).reshape(2, 4)
GRPCURL = Path(sys.executable).parent / "grpcurl"
ONES = "AACAPwAAgD8AAIA/AACAPw=="  # float32 [1, 4] of ones, base64 (the README's example)


def raw_request(model: str, x: np.ndarray, version: str = "", key: str = "", name: str = "x") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, model_version=version, id="req-1")
    req.inputs.add(name=name, datatype={np.float32: "FP32", np.int64: "INT64"}[x.dtype.type], shape=x.shape)
    req.raw_input_contents.append(x.tobytes())
    if key:
        req.parameters["routing_key"].string_param = key
    return req


def output(resp: pb.ModelInferResponse, i: int = 0) -> np.ndarray:
    o = resp.outputs[i]
    assert o.datatype == "FP32"
    return np.frombuffer(resp.raw_output_contents[i], np.float32).reshape(tuple(o.shape))


@pytest.fixture
def oip(client, registry, agents):
    """An agent following `oip` (v1 scales by 1, v2 by 2, v2 a 30 % canary) and `other`."""
    v1 = client.register("oip", onnx_scale_model(1.0), filename="m.onnx")
    client.promote("oip", v1.version, "production")
    client.register("oip", onnx_scale_model(2.0), filename="m.onnx")
    o1 = client.register("other", onnx_scale_model(3.0), filename="o.onnx")
    client.promote("other", o1.version, "production")
    agent = agents(registry.address, ["oip", "other"])
    agent.wait_serving()
    channel = grpc.insecure_channel(agent.address)
    yield pb_grpc.GRPCInferenceServiceStub(channel), agent
    channel.close()


def test_oip_routes_on_the_agents_inference_port(oip, client):
    stub, agent = oip
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    meta = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "modelreg-agent" and meta.version
    assert stub.ModelReady(pb.ModelReadyRequest(name="oip")).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="oip", version="1")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="oip", version="2")).ready  # not loaded yet
    assert not stub.ModelReady(pb.ModelReadyRequest(name="nope")).ready

    m = stub.ModelMetadata(pb.ModelMetadataRequest(name="oip"))
    assert (m.name, list(m.versions), m.platform) == ("oip", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in m.inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in m.outputs] == [("y", "FP32", [-1, 4])]

    r = stub.ModelInfer(raw_request("oip", X))
    assert (r.model_name, r.model_version, r.id) == ("oip", "1", "req-1")
    np.testing.assert_array_equal(output(r), X)
    r = stub.ModelInfer(raw_request("models/other", X))  # the resource name works too
    np.testing.assert_array_equal(output(r), X * 3)

    # typed contents in -> typed contents out
    req = pb.ModelInferRequest(model_name="oip")
    req.inputs.add(name="x", datatype="FP32", shape=[2, 4]).contents.fp32_contents.extend(X.reshape(-1).tolist())
    req.outputs.add(name="y")
    r = stub.ModelInfer(req)
    assert not r.raw_output_contents and r.outputs[0].name == "y"
    assert list(r.outputs[0].contents.fp32_contents) == X.reshape(-1).tolist()

    # grpcurl through reflection, as the README shows it: raw bytes in, raw bytes out
    listed = subprocess.run([str(GRPCURL), "-plaintext", agent.address, "list"], capture_output=True, text=True)
    assert "inference.GRPCInferenceService" in listed.stdout.split()
    body = {
        "model_name": "oip",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}],
        "raw_input_contents": [ONES],
        "parameters": {"routing_key": {"string_param": "user-42"}},
    }
    out = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            "-d",
            json.dumps(body),
            agent.address,
            "inference.GRPCInferenceService/ModelInfer",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["model_version"] == "1" and doc["outputs"][0]["shape"] == ["1", "4"]
    assert doc["raw_output_contents"] == [ONES]

    # the canary: both loaded; an empty version follows the weight, sticky per routing_key
    client.set_canary("oip", 2, 30)
    serving = ag.SERVED_VERSION_STATE_SERVING
    wait_until(lambda: serving_states(agent, "oip") == {1: serving, 2: serving}, 60, what="stable and canary loaded")
    by_key = {k: stub.ModelInfer(raw_request("oip", X, key=k)).model_version for k in (f"u{i}" for i in range(100))}
    assert set(by_key.values()) == {"1", "2"}
    for k, v in list(by_key.items())[:30]:
        r = stub.ModelInfer(raw_request("oip", X, key=k))
        assert r.model_version == v and np.array_equal(output(r), X * int(v)), "a routing key switched versions"
    assert sorted(stub.ModelMetadata(pb.ModelMetadataRequest(name="oip")).versions) == ["1", "2"]
    # pinned versions answer from themselves whatever the key
    for v in ("1", "2"):
        for k in ("u1", "u2", "u3"):
            r = stub.ModelInfer(raw_request("oip", X, version=v, key=k))
            assert r.model_version == v
            np.testing.assert_array_equal(output(r), X * int(v))


def test_oip_errors_name_what_to_change(oip):
    stub, _ = oip

    def error(req) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req)
        return e.value

    e = error(raw_request("nope", X))
    assert e.code() == grpc.StatusCode.NOT_FOUND and "does not serve 'nope'" in e.details()
    assert "models/oip" in e.details() and "models/other" in e.details()
    e = error(raw_request("oip", X, version="7"))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    assert "models/oip/versions/7 is not loaded" in e.details() and "loaded versions: 1" in e.details()
    with pytest.raises(grpc.RpcError) as me:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="oip", version="7"))
    assert me.value.code() == grpc.StatusCode.NOT_FOUND and "loaded versions: 1" in me.value.details()
    e = error(raw_request("oip", X, version="latest"))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "'latest' is not a version number" in e.details()

    e = error(raw_request("oip", X.astype(np.int64)))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x' of models/oip/versions/1: expected FP32 (float32) with shape [-1, 4]" in e.details()
    assert "got INT64 with shape [2, 4]" in e.details()
    e = error(raw_request("oip", np.ones((2, 3), np.float32)))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "input 'x'" in e.details()
        and "[-1, 4]" in e.details()
        and "got FP32 (float32) with shape [2, 3]" in (e.details())
    )
    e = error(raw_request("oip", X, name="z"))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "takes inputs ['x']; missing ['x']; unknown ['z']" in (
        e.details()
    )
    bad = raw_request("oip", X)
    bad.raw_input_contents[0] = b"\0" * 12
    e = error(bad)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 32 bytes of raw_input_contents, got 12" in (
        e.details()
    )
    odd = raw_request("oip", X)
    odd.inputs[0].datatype = "BF16"
    e = error(odd)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "datatype 'BF16'" in e.details()
    unknown_out = raw_request("oip", X)
    unknown_out.outputs.add(name="logits")
    e = error(unknown_out)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown outputs ['logits']" in e.details()


def test_oip_tensor_codec_round_trips_every_content_kind():
    """Pure logic: decoding typed and raw contents, BYTES framing, and the response's encoding."""
    req = pb.ModelInferRequest()
    req.inputs.add(name="i", datatype="INT64", shape=[3]).contents.int64_contents.extend([1, -2, 3])
    req.inputs.add(name="u", datatype="UINT8", shape=[2]).contents.uint_contents.extend([0, 255])
    req.inputs.add(name="b", datatype="BOOL", shape=[2]).contents.bool_contents.extend([True, False])
    req.inputs.add(name="s", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"ab", b""])
    got = decode_inputs(req)
    assert got["i"].dtype == np.int64 and got["i"].tolist() == [1, -2, 3]
    assert got["u"].dtype == np.uint8 and got["u"].tolist() == [0, 255]
    assert got["b"].dtype == np.bool_ and got["s"].tolist() == [b"ab", b""]

    raw = pb.ModelInferRequest()
    raw.inputs.add(name="s", datatype="BYTES", shape=[2])
    raw.raw_input_contents.append(struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0))
    assert decode_inputs(raw)["s"].tolist() == [b"ab", b""]
    raw.raw_input_contents[0] = struct.pack("<I", 9) + b"ab"
    with pytest.raises(BadInput, match="declares 9 bytes"):
        decode_inputs(raw)
    over = pb.ModelInferRequest()
    over.inputs.add(name="u", datatype="UINT8", shape=[1]).contents.uint_contents.append(300)
    with pytest.raises(BadInput, match="out of UINT8's range"):
        decode_inputs(over)

    resp = pb.ModelInferResponse()
    encode_outputs(resp, {"h": np.ones(2, np.float16), "s": np.array([b"x"], dtype=object)}, raw=False)
    assert len(resp.raw_output_contents) == 2  # FP16 only travels raw, so everything does
    assert resp.raw_output_contents[1] == struct.pack("<I", 1) + b"x"
    typed = pb.ModelInferResponse()
    encode_outputs(typed, {"i": np.array([[1, 2]], np.int32)}, raw=False)
    assert typed.outputs[0].datatype == "INT32" and list(typed.outputs[0].shape) == [1, 2]
    assert list(typed.outputs[0].contents.int_contents) == [1, 2]
