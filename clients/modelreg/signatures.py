"""Version signatures on the client: reading an ONNX file's inputs and outputs before it is
registered (modelreg.onnx_graph: the file streams past in chunks and its weights are skipped,
so memory stays about one chunk whatever the model's size; no `onnx` needed), and their text
form for the CLI.

The registry reads the graph itself (with the same reader) and refuses a signature that
disagrees, so this is what a client sends for the record and what it shows; a file that is
not ONNX is sent without a signature and the registry says what is wrong.
"""

from __future__ import annotations

from pathlib import Path

from modelreg import onnx_graph
from modelreg.onnx_graph import ONNX_ELEMENT_TYPES
from modelreg.v1 import resources_pb2 as res

__all__ = ["ONNX_ELEMENT_TYPES", "SOURCE_NAMES", "read_onnx", "shape_text", "signature_lines", "tensor_text"]

SOURCE_NAMES = {
    res.SIGNATURE_SOURCE_UNSPECIFIED: "",
    res.SIGNATURE_SOURCE_ARTIFACT: "read from the ONNX graph",
    res.SIGNATURE_SOURCE_CLIENT: "sent by the client (unverified)",
    res.SIGNATURE_SOURCE_AGENT: "reported by the first agent that loaded it",
}


def read_onnx(artifact: str | Path | bytes | bytearray | memoryview) -> res.Signature | None:
    """The signature of an ONNX file (read in chunks) or its bytes; None when it is not ONNX
    (or the file cannot be read). The weights are skipped, never held."""
    try:
        if isinstance(artifact, (bytes, bytearray, memoryview)):
            graph = onnx_graph.read_bytes(bytes(artifact))
        else:
            graph = onnx_graph.read_file(artifact)
    except (onnx_graph.NotOnnx, OSError):  # not ONNX: the registry refuses it and says why
        return None
    return res.Signature(inputs=[_tensor(t) for t in graph.inputs], outputs=[_tensor(t) for t in graph.outputs])


def _tensor(t: onnx_graph.Tensor) -> res.TensorSpec:
    spec = res.TensorSpec(name=t.name, element_type=t.element_type)
    if t.shape is None:
        return spec
    spec.rank_known = True
    for d in t.shape:
        if isinstance(d, int):
            spec.shape.add(size=d)
        elif isinstance(d, str):
            spec.shape.add(symbol=d)
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
