"""Reads an ONNX model's signature from its bytes AS THEY STREAM PAST, without holding the
model: registration feeds it every chunk on the way to the blob store.

An ONNX file is one protobuf `ModelProto`. The reader walks its wire format (tags, varints,
lengths) and keeps only what a signature needs: `ir_version`, the graph's `input` and
`output` entries (ValueInfoProto, a few bytes each) and the names of the graph's
initializers (which older exporters also list as inputs). Everything else, the weights
above all, is skipped by length as it passes, so memory stays O(inputs + outputs) whatever
the model's size, and external-data models need nothing but the graph file. The kept
ValueInfoProtos are decoded with `onnx`'s own classes (the server extra installs it).

The whole stream must be well-formed protobuf (every field's length inside its message and
the file), with an `ir_version` and a graph; otherwise `finish()` raises `NotOnnx` saying
where it broke.
"""

from __future__ import annotations

from collections.abc import Generator

import onnx  # at import, not on the event loop at the first registration (the server extra has it)
from google.protobuf.message import DecodeError

from registry_server.domain.signatures import ONNX_ELEMENT_TYPES, Dim, Signature, Source, TensorSpec

# ModelProto and GraphProto field numbers (onnx.proto3).
_MODEL_IR_VERSION = 1
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_GRAPH_INPUT = 11
_GRAPH_OUTPUT = 12
_TENSOR_NAME = 8
#: At most this many bytes of inputs and outputs are kept (a real graph's are a few KiB).
MAX_KEPT = 16 * 1024 * 1024
#: Consumed bytes are dropped from the buffer once this many pile up.
_COMPACT = 1024 * 1024

_Step = Generator[None, None, int]


class NotOnnx(Exception):
    """The bytes are not an ONNX model; the message says why, for people."""


class OnnxReader:
    """Feed it the file in order with `feed`, then call `finish` for the signature."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # read position in _buf
        self._base = 0  # stream offset of _buf[0]
        self._eof = False
        self._error: NotOnnx | None = None
        self._ir_version = 0
        self._graph = False
        self._inputs: list[bytes] = []
        self._outputs: list[bytes] = []
        self._initializers: set[str] = set()
        self._kept = 0
        self._done = False
        self._parser = self._model()
        next(self._parser)

    # ------------------------------------------------------------------ driving

    def feed(self, chunk: bytes) -> None:
        """Consumes a chunk; cheap (a skipped field costs one slice per chunk, not per byte).
        Once the stream turned out not to be ONNX, further chunks are ignored and `finish`
        raises."""
        if self._error is not None:
            return
        if self._pos >= _COMPACT:
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0
        self._buf += chunk
        self._step()

    def finish(self) -> Signature:
        """The signature; raises NotOnnx when the stream was not a whole ONNX model."""
        if self._error is None and not self._done:
            self._eof = True
            self._step()
        if self._error is not None:
            raise self._error
        if not self._ir_version:
            raise NotOnnx("it has no ir_version (every ONNX ModelProto sets one)")
        if not self._graph:
            raise NotOnnx("it has no graph")
        return self._decode()

    def _step(self) -> None:
        try:
            self._parser.send(None)
        except StopIteration:
            self._done = True
        except NotOnnx as e:
            self._error = e

    # ------------------------------------------------------------------ wire format

    @property
    def _offset(self) -> int:
        return self._base + self._pos

    def _avail(self) -> int:
        return len(self._buf) - self._pos

    def _wait(self, n: int) -> Generator[None, None, None]:
        while self._avail() < n:
            if self._eof:
                end = self._base + len(self._buf)
                raise NotOnnx(f"the protobuf stream ends in the middle of a field at offset {end}")
            yield

    def _varint(self) -> _Step:
        result = shift = 0
        for _ in range(10):
            yield from self._wait(1)
            b = self._buf[self._pos]
            self._pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise NotOnnx(f"a varint longer than 10 bytes at offset {self._offset}")

    def _read(self, n: int) -> Generator[None, None, bytes]:
        yield from self._wait(n)
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        return out

    def _skip(self, n: int) -> Generator[None, None, None]:
        while n > 0:
            if not self._avail():
                yield from self._wait(1)
            k = min(n, self._avail())
            self._pos += k
            n -= k

    def _tag(self) -> Generator[None, None, tuple[int, int]]:
        at = self._offset
        tag = yield from self._varint()
        field, wire = tag >> 3, tag & 7
        if field == 0 or wire in (3, 4, 6, 7):
            raise NotOnnx(f"invalid protobuf field (number {field}, wire type {wire}) at offset {at}")
        return field, wire

    def _skip_field(self, wire: int) -> Generator[None, None, None]:
        if wire == 0:
            yield from self._varint()
        elif wire == 1:
            yield from self._skip(8)
        elif wire == 5:
            yield from self._skip(4)
        else:  # 2, length-delimited
            yield from self._skip((yield from self._varint()))

    def _check_end(self, end: int, what: str) -> None:
        if self._offset > end:
            raise NotOnnx(f"a field overruns the {what} that holds it (offset {self._offset}, {what} ends at {end})")

    # ------------------------------------------------------------------ messages

    def _model(self) -> Generator[None, None, None]:
        """ModelProto, the whole stream."""
        while True:
            if not self._avail():
                if self._eof:
                    return
                yield
                continue
            field, wire = yield from self._tag()
            if field == _MODEL_IR_VERSION and wire == 0:
                self._ir_version = yield from self._varint()
            elif field == _MODEL_GRAPH and wire == 2:
                length = yield from self._varint()
                yield from self._graph_fields(self._offset + length)
                self._graph = True
            else:
                yield from self._skip_field(wire)

    def _graph_fields(self, end: int) -> Generator[None, None, None]:
        """GraphProto: keeps input and output, the initializers' names; skips the rest."""
        while self._offset < end:
            field, wire = yield from self._tag()
            if wire == 2 and field in (_GRAPH_INPUT, _GRAPH_OUTPUT):
                length = yield from self._varint()
                self._kept += length
                if self._kept > MAX_KEPT:
                    raise NotOnnx(f"its graph's inputs and outputs take more than {MAX_KEPT} bytes")
                raw = yield from self._read(length)
                (self._inputs if field == _GRAPH_INPUT else self._outputs).append(raw)
            elif wire == 2 and field == _GRAPH_INITIALIZER:
                length = yield from self._varint()
                yield from self._tensor_name(self._offset + length)
            else:
                yield from self._skip_field(wire)
            self._check_end(end, "graph")

    def _tensor_name(self, end: int) -> Generator[None, None, None]:
        """TensorProto: only its name is kept."""
        while self._offset < end:
            field, wire = yield from self._tag()
            if field == _TENSOR_NAME and wire == 2:
                length = yield from self._varint()
                if length > 64 * 1024:
                    raise NotOnnx(f"an initializer's name is {length} bytes long")
                self._initializers.add((yield from self._read(length)).decode("utf-8", "replace"))
            else:
                yield from self._skip_field(wire)
            self._check_end(end, "initializer")

    # ------------------------------------------------------------------ decoding

    def _decode(self) -> Signature:
        def spec(raw: bytes, kind: str) -> TensorSpec:
            try:
                vi = onnx.ValueInfoProto.FromString(raw)
            except DecodeError as e:
                raise NotOnnx(f"one of its graph's {kind}s does not decode ({e})") from None
            return tensor_spec(vi)

        inputs = [spec(r, "input") for r in self._inputs]
        return Signature(
            tuple(t for t in inputs if t.name not in self._initializers),
            tuple(spec(r, "output") for r in self._outputs),
            Source.ARTIFACT,
        )


def tensor_spec(vi) -> TensorSpec:  # noqa: ANN001 - an onnx.ValueInfoProto
    """A graph input or output as a TensorSpec."""
    t = vi.type
    kind = t.WhichOneof("value")
    if kind != "tensor_type":
        return TensorSpec(vi.name, (kind or "unknown").removesuffix("_type"), None)
    tt = t.tensor_type
    element = ONNX_ELEMENT_TYPES.get(tt.elem_type, "unknown")
    if not tt.HasField("shape"):
        return TensorSpec(vi.name, element, None)
    dims: list[Dim] = []
    for d in tt.shape.dim:
        which = d.WhichOneof("value")
        dims.append(d.dim_value if which == "dim_value" else d.dim_param if which == "dim_param" else None)
    return TensorSpec(vi.name, element, tuple(dims))


def read_signature(data: bytes) -> Signature:
    """The signature of a whole ONNX file in memory (tests, small files)."""
    reader = OnnxReader()
    reader.feed(data)
    return reader.finish()
