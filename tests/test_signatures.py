"""Signatures on versions as a user meets them: registered ONNX graphs (built with
onnx.helper) against a real registry on embedded Postgres, through the real `modelreg`
script, the SDK, a raw gRPC stub (what grpcurl sends) and the real grpcurl binary. The
streaming ONNX reader and the signature rules are pinned down on their own too."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import open_asyncpg
from test_cli_and_grpcurl import grpcurl

from modelreg import errors
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res
from registry_server.domain import signatures as ds
from registry_server.onnx_reader import NotOnnx, OnnxReader, read_signature


def onnx_model(
    shape: list, *, name: str = "images", dtype: int = 1, weights: int = 4, seed: int = 0, out: str = "scores"
) -> bytes:
    """An ONNX graph `out = name * w`, with `w` an initializer of `weights` float32 values
    (random from `seed`, so two models differ in bytes); `shape` may hold symbols."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.random(weights, dtype=np.float32), "w")
    x = helper.make_tensor_value_info(name, dtype, shape)
    y = helper.make_tensor_value_info(out, dtype, shape)
    node = helper.make_node("Mul", [name, "w_scalar"], [out])
    scalar = helper.make_tensor("w_scalar", dtype, [1], [1.0] if dtype == 1 else [1])
    graph = helper.make_graph([node], "g", [x], [y], initializer=[w, scalar])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


# ---------------------------------------------------------------- the reader and the rules


def test_reader_reads_inputs_and_outputs_from_any_chunking_and_skips_initializers():
    data = onnx_model(["batch", 3, 640, 640], weights=1000)
    whole = read_signature(data)
    assert whole.inputs == (ds.TensorSpec("images", "float32", ("batch", 3, 640, 640)),)
    assert whole.outputs == (ds.TensorSpec("scores", "float32", ("batch", 3, 640, 640)),)
    for size in (1, 7, 4096):
        r = OnnxReader()
        for i in range(0, len(data), size):
            r.feed(data[i : i + size])
        assert r.finish() == whole


def test_reader_keeps_no_weights_in_memory():
    """A 32 MiB initializer streams past in 1 MiB chunks; the buffer never holds more than
    about one chunk."""
    data = onnx_model([1, 4], weights=8 * 1024 * 1024)
    r, peak = OnnxReader(), 0
    for i in range(0, len(data), 1 << 20):
        r.feed(data[i : i + (1 << 20)])
        peak = max(peak, len(r._buf))
    assert r.finish().inputs[0].shape == (1, 4)
    assert peak <= 2 << 20


def test_the_sdk_reads_a_file_in_chunks_as_the_registry_reads_it(tmp_path):
    """The SDK's reader (modelreg.onnx_graph, no `onnx`) streams a file past its weights."""
    from modelreg import onnx_graph, signatures

    data = onnx_model(["batch", 3, 640, 640], weights=1000)
    path = write(tmp_path, "m.onnx", data)
    assert onnx_graph.read_file(path, chunk=7) == onnx_graph.read_bytes(data)
    sig = signatures.read_onnx(path)
    assert sig is not None and sig == signatures.read_onnx(data)
    assert [signatures.tensor_text(t) for t in sig.inputs] == ["images float32 [batch, 3, 640, 640]"]
    assert [signatures.tensor_text(t) for t in sig.outputs] == ["scores float32 [batch, 3, 640, 640]"]
    assert signatures.read_onnx(b"not onnx") is None and signatures.read_onnx(tmp_path / "missing.onnx") is None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"garbage bytes, certainly not a model", "invalid protobuf field"),
        (onnx_model([1, 4])[:-5], "ends in the middle of a field"),
        (b"\x08\x07", "no graph"),
        (bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8)), "."),
    ],
)
def test_reader_refuses_what_is_not_onnx(data, why):
    with pytest.raises(NotOnnx, match=why):
        read_signature(data)


def test_signature_rules_symbols_match_sizes_do_not():
    a = ds.Signature((ds.TensorSpec("x", "float32", ("batch", 3)),), ())
    renamed = ds.Signature((ds.TensorSpec("x", "float32", ("N", 3)),), ())
    fixed = ds.Signature((ds.TensorSpec("x", "float32", (1, 3)),), ())
    retyped = ds.Signature((ds.TensorSpec("x", "float16", ("batch", 3)),), ())
    assert ds.input_changes(a, renamed) == []
    assert ds.input_changes(a, fixed) == ["input 'x' changed shape from [batch, 3] to [1, 3]"]
    assert ds.input_changes(a, retyped) == ["input 'x' changed element type from float32 to float16"]
    assert ds.disagreement(a, renamed)  # a client-sent one must be exact


# ---------------------------------------------------------------- registration and get


def test_onnx_signature_stored_at_registration_and_shown_by_get(cli, tmp_path):
    path = write(tmp_path, "det.onnx", onnx_model(["batch", 3, 640, 640]))
    cli("register", "det", path, "-o", "json")
    got = json.loads(cli("get", "det", "1", "-o", "json").stdout)
    sig = got["signature"]
    assert sig["source"] == "SIGNATURE_SOURCE_ARTIFACT"
    assert sig["inputs"] == [
        {
            "name": "images",
            "elementType": "float32",
            "shape": [{"symbol": "batch"}, {"size": "3"}, {"size": "640"}, {"size": "640"}],
            "rankKnown": True,
        }
    ]
    assert sig["outputs"][0]["name"] == "scores"
    table = cli("get", "det", "1").stdout
    assert "images float32 [batch, 3, 640, 640]" in table
    assert "scores float32 [batch, 3, 640, 640]" in table
    assert "read from the ONNX graph" in table


def test_grpcurl_shows_the_signature(registry, client):
    client.register("g", onnx_model([1, 4], name="x", out="y"), filename="g.onnx")
    shown = json.loads(
        grpcurl(
            registry.address, "-d", '{"name": "models/g/versions/1"}', "modelreg.v1.RegistryService/GetModelVersion"
        ).stdout
    )
    sig = shown["model_version"]["signature"]
    assert sig["inputs"][0]["name"] == "x" and sig["inputs"][0]["element_type"] == "float32"
    assert [d["size"] for d in sig["inputs"][0]["shape"]] == ["1", "4"]


def _raw_register(address: str, data: bytes, **header) -> rs.RegisterModelVersionResponse:
    """What grpcurl sends: a header and the bytes, no SDK in between."""
    with grpc.insecure_channel(address) as ch:
        stub = rs_grpc.RegistryServiceStub(ch)
        h = rs.RegisterModelVersionHeader(parent="models/raw", create_model=True, **header)
        msgs = [rs.RegisterModelVersionRequest(header=h), rs.RegisterModelVersionRequest(chunk=data)]
        return stub.RegisterModelVersion(iter(msgs), timeout=30)


async def _rows(url: str) -> tuple[int, int]:
    conn = await open_asyncpg(url)
    try:
        return await conn.fetchval("SELECT count(*) FROM model_versions"), await conn.fetchval(
            "SELECT count(*) FROM blobs"
        )
    finally:
        await conn.close()


def _stored_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]


def test_garbage_registered_as_onnx_is_refused_and_leaves_nothing(cli, registry, tmp_path):
    path = write(tmp_path, "weights.bin", os.urandom(3000))
    refused = cli("register", "junk", path, "--format", "onnx", check=False)
    assert refused.returncode != 0
    assert "weights.bin is not an ONNX model: " in refused.stderr
    assert "INVALID_ARGUMENT" in refused.stderr or "invalid argument" in refused.stderr.lower()

    # The same bytes from a raw stream (grpcurl's way): refused by the server itself.
    with pytest.raises(grpc.RpcError) as raw:
        _raw_register(registry.address, b"not onnx" * 100, filename="x.onnx", format=res.ARTIFACT_FORMAT_ONNX)
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x.onnx is not an ONNX model: " in raw.value.details()
    assert asyncio.run(_rows(registry.database_url)) == (0, 0)
    assert _stored_files(tmp_path) == []


def test_a_client_signature_that_disagrees_with_the_graph_is_refused(registry, tmp_path):
    wrong = res.Signature(inputs=[res.TensorSpec(name="images", element_type="float32", rank_known=True)])
    wrong.inputs[0].shape.add(size=1)
    with pytest.raises(grpc.RpcError) as refused:
        _raw_register(registry.address, onnx_model([1, 4]), filename="m.onnx", signature=wrong)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "header.signature disagrees with the ONNX graph of m.onnx" in refused.value.details()
    assert "input 'images' changed shape from [1, 4] to [1]" in refused.value.details()
    assert asyncio.run(_rows(registry.database_url)) == (0, 0)


def test_a_client_signature_of_another_format_is_stored_as_sent(registry, client):
    sig = res.Signature(inputs=[res.TensorSpec(name="text", element_type="string", rank_known=True)])
    sig.inputs[0].shape.add(symbol="batch")
    v = client.register("tok", b"tokenizer bytes", filename="tok.bin", signature=sig)
    assert v.signature.source == res.SIGNATURE_SOURCE_CLIENT
    assert v.signature.inputs[0].shape[0].symbol == "batch"


# ---------------------------------------------------------------- compare and the gate


@pytest.fixture
def three(client):
    """`app`: v1 [batch, 3, 640, 640] in production, v2 at 320 (a breaking change), v3 as v1
    with its batch axis named N (the same for an app)."""
    client.register("app", onnx_model(["batch", 3, 640, 640], seed=1), filename="v1.onnx")
    client.promote("app", 1, "production")
    client.register("app", onnx_model(["batch", 3, 320, 320], seed=2), filename="v2.onnx")
    client.register("app", onnx_model(["N", 3, 640, 640], seed=3), filename="v3.onnx")
    return client


def test_compare_flags_a_changed_input_shape(three, cli):
    cmp = json.loads(cli("compare", "app", "-o", "json").stdout)
    by = {int(v["version"]): v for v in cmp["versions"]}
    assert by[2]["signatureDiffers"] is True
    assert by[2]["signatureChanges"] == [
        "input 'images' changed shape from [batch, 3, 640, 640] to [batch, 3, 320, 320]",
        "output 'scores' changed shape from [batch, 3, 640, 640] to [batch, 3, 320, 320]",
    ]
    assert "signatureDiffers" not in by[3] and "signatureDiffers" not in by[1]
    table = cli("compare", "app").stdout
    assert "DIFFERS" in table
    assert "v2's signature differs from production v1's (a breaking change for the app)" in table


def test_same_signature_gate_refuses_changed_inputs_and_passes_matching_ones(three, cli):
    three.set_gate_policy("app", "production", same_signature=True)
    with pytest.raises(errors.FailedPrecondition) as refused:
        three.promote("app", 2, "production")
    assert "v2's inputs differ from production v1's: input 'images' changed shape" in str(refused.value)
    failed = cli("gates", "check", "app", "2", "--stage", "production", "-o", "json", check=False)
    assert failed.returncode == 1
    (result,) = json.loads(failed.stdout)["evaluation"]["checks"]
    assert result["type"] == "same-signature" and result["actual"] == "differs" and result["passed"] is False
    assert result["required"] == "inputs of production v1"
    three.promote("app", 3, "production")
    assert three.get_version("app", "production").version == 3


def test_same_signature_gate_passes_when_nothing_is_in_production(cli, client):
    client.register("fresh", onnx_model([1, 4]), filename="f.onnx")
    cli("gates", "set", "fresh", "--stage", "production", "--same-signature")
    check = client.check_gates("fresh", 1, "production")
    assert check.passed
    assert "no other version is in production" in check.checks[0].description
    client.promote("fresh", 1, "production")


def test_same_signature_gate_refuses_a_version_without_a_signature(client):
    client.register("mixed", onnx_model([1, 4]), filename="m.onnx")
    client.promote("mixed", 1, "production")
    client.register("mixed", b"opaque", filename="m.bin")
    client.set_gate_policy("mixed", "production", same_signature=True)
    with pytest.raises(errors.FailedPrecondition, match="v2 has no signature"):
        client.promote("mixed", 2, "production")
