"""Version signatures on the client: reading an ONNX file's inputs and outputs before it is
registered (with `onnx`, when it is installed: an optional dependency, imported lazily), and
their text form for the CLI.

The registry reads the graph itself and refuses a signature that disagrees, so this is what
a client sends for the record and what a client without the server's reader would show; a
file `onnx` cannot parse is sent without a signature and the registry says what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelreg.v1 import resources_pb2 as res

#: ONNX TensorProto.DataType numbers -> numpy's spelling (the registry's element types).
ONNX_ELEMENT_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
}
SOURCE_NAMES = {
    res.SIGNATURE_SOURCE_UNSPECIFIED: "",
    res.SIGNATURE_SOURCE_ARTIFACT: "read from the ONNX graph",
    res.SIGNATURE_SOURCE_CLIENT: "sent by the client (unverified)",
    res.SIGNATURE_SOURCE_AGENT: "reported by the first agent that loaded it",
}


def read_onnx(artifact: str | Path | bytes) -> res.Signature | None:
    """The signature of an ONNX file or its bytes; None when `onnx` is not installed or
    cannot parse it. The weights are not loaded (`load_external_data=False`)."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        if isinstance(artifact, (bytes, bytearray, memoryview)):
            model = onnx.load_model_from_string(bytes(artifact))
        else:
            model = onnx.load(str(artifact), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX: the registry refuses it and says why
        return None
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    return res.Signature(
        inputs=[_tensor(vi) for vi in graph.input if vi.name not in initializers],
        outputs=[_tensor(vi) for vi in graph.output],
    )


def _tensor(vi: Any) -> res.TensorSpec:
    kind = vi.type.WhichOneof("value")
    if kind != "tensor_type":
        return res.TensorSpec(name=vi.name, element_type=(kind or "unknown").removesuffix("_type"))
    tt = vi.type.tensor_type
    spec = res.TensorSpec(name=vi.name, element_type=ONNX_ELEMENT_TYPES.get(tt.elem_type, "unknown"))
    if tt.HasField("shape"):
        spec.rank_known = True
        for d in tt.shape.dim:
            which = d.WhichOneof("value")
            if which == "dim_value":
                spec.shape.add(size=d.dim_value)
            elif which == "dim_param":
                spec.shape.add(symbol=d.dim_param)
            else:
                spec.shape.add()
    return spec


def shape_text(t: res.TensorSpec) -> str:
    """`[batch, 3, 640, 640]`; `?` for an unnamed dynamic axis; `[...]` for an unknown rank."""
    if not t.rank_known and not len(t.shape):
        return "[...]"
    dims = []
    for d in t.shape:
        which = d.WhichOneof("value")
        dims.append(str(d.size) if which == "size" else d.symbol if which == "symbol" else "?")
    return "[" + ", ".join(dims) + "]"


def tensor_text(t: res.TensorSpec) -> str:
    """`images float32 [1, 3, 640, 640]`."""
    return f"{t.name} {t.element_type} {shape_text(t)}"


def signature_lines(sig: res.Signature) -> list[tuple[str, str]]:
    """(label, text) rows for `modelreg get`: one per input and output."""
    rows = [("input", tensor_text(t)) for t in sig.inputs] + [("output", tensor_text(t)) for t in sig.outputs]
    return rows
