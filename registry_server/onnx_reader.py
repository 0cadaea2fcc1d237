"""Reads an ONNX model's signature from its bytes AS THEY STREAM PAST, without holding the
model: registration feeds it every chunk on the way to the blob store.

The streaming parser is the SDK's (modelreg.onnx_graph: protobuf wire format, the weights
skipped by length, memory O(inputs + outputs) whatever the model's size); this module turns
what it reads into the domain's Signature. The whole stream must be well-formed protobuf with
an `ir_version` and a graph; otherwise `finish()` raises `NotOnnx` saying where it broke.
"""

from __future__ import annotations

from modelreg import onnx_graph
from modelreg.onnx_graph import NotOnnx
from registry_server.domain.signatures import Signature, Source, TensorSpec

__all__ = ["NotOnnx", "OnnxReader", "read_signature", "tensor_spec"]


class OnnxReader:
    """Feed it the file in order with `feed`, then call `finish` for the signature."""

    def __init__(self) -> None:
        self._reader = onnx_graph.OnnxReader()

    def feed(self, chunk: bytes) -> None:
        """Consumes a chunk (see modelreg.onnx_graph.OnnxReader.feed)."""
        self._reader.feed(chunk)

    def finish(self) -> Signature:
        """The signature; raises NotOnnx when the stream was not a whole ONNX model."""
        graph = self._reader.finish()
        return Signature(
            tuple(tensor_spec(t) for t in graph.inputs), tuple(tensor_spec(t) for t in graph.outputs), Source.ARTIFACT
        )

    @property
    def _buf(self) -> bytearray:
        """The bytes the parser holds now (what a test of its memory measures)."""
        return self._reader._buf


def tensor_spec(t: onnx_graph.Tensor) -> TensorSpec:
    """A graph input or output as the domain's TensorSpec."""
    return TensorSpec(t.name, t.element_type, t.shape)


def read_signature(data: bytes) -> Signature:
    """The signature of a whole ONNX file in memory (tests, small files)."""
    reader = OnnxReader()
    reader.feed(data)
    return reader.finish()
