"""Reads an ONNX model's inputs and outputs from its bytes AS THEY STREAM PAST, without holding
the model and without `onnx`: the SDK reads a file to register this way, and the registry
feeds it every chunk of a registration on the way to the blob store.

An ONNX file is one protobuf `ModelProto`. The reader walks its wire format (tags, varints,
lengths) and keeps only what a signature needs: `ir_version`, the graph's `input` and
`output` entries (ValueInfoProto, a few bytes each) and the names of the graph's
initializers (which older exporters also list as inputs). Everything else, the weights
above all, is skipped by length as it passes, so memory stays O(inputs + outputs) whatever
the model's size, and external-data models need nothing but the graph file. The kept
ValueInfoProtos are decoded here too (name, element type, shape), from onnx.proto's field
numbers.

The whole stream must be well-formed protobuf (every field's length inside its message and
the file), with an `ir_version` and a graph; otherwise `finish()` raises `NotOnnx` saying
where it broke.

    reader = OnnxReader()
    for chunk in chunks:
        reader.feed(chunk)
    graph = reader.finish()          # Graph(inputs=(Tensor("images", "float32", ("batch", 3, 640, 640)),), ...)
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path

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

#: A shape's axis: a fixed size, a symbolic name, or None (dynamic, unnamed).
Dim = int | str | None

# ModelProto and GraphProto field numbers (onnx.proto3).
_MODEL_IR_VERSION = 1
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_GRAPH_INPUT = 11
_GRAPH_OUTPUT = 12
_TENSOR_NAME = 8
# ValueInfoProto, TypeProto (its `value` oneof), TypeProto.Tensor, TensorShapeProto(.Dimension).
_VALUE_INFO_NAME = 1
_VALUE_INFO_TYPE = 2
_TYPE_KINDS = {1: "tensor", 4: "sequence", 5: "map", 7: "opaque", 8: "sparse_tensor", 9: "optional"}
_TYPE_TENSOR = 1
_TENSOR_ELEM_TYPE = 1
_TENSOR_SHAPE = 2
_SHAPE_DIM = 1
_DIM_VALUE = 1
_DIM_PARAM = 2
#: At most this many bytes of inputs and outputs are kept (a real graph's are a few KiB).
MAX_KEPT = 16 * 1024 * 1024
#: Consumed bytes are dropped from the buffer once this many pile up.
_COMPACT = 1024 * 1024
#: The chunk size `read_file` reads with.
CHUNK = 1024 * 1024

_Step = Generator[None, None, int]


class NotOnnx(Exception):
    """The bytes are not an ONNX model; the message says why, for people."""


@dataclass(frozen=True)
class Tensor:
    """A graph input or output. `element_type` is numpy's spelling ('float32', 'string'), or the
    kind of a non-tensor value ('sequence', 'map', ...), or 'unknown'; `shape` None: no shape."""

    name: str
    element_type: str
    shape: tuple[Dim, ...] | None


@dataclass(frozen=True)
class Graph:
    """What a signature needs of an ONNX model: its inputs (initializers left out) and outputs."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    ir_version: int


class OnnxReader:
    """Feed it the file in order with `feed`, then call `finish` for the graph's tensors."""

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

    def finish(self) -> Graph:
        """The graph's tensors; raises NotOnnx when the stream was not a whole ONNX model."""
        if self._error is None and not self._done:
            self._eof = True
            self._step()
        if self._error is not None:
            raise self._error
        if not self._ir_version:
            raise NotOnnx("it has no ir_version (every ONNX ModelProto sets one)")
        if not self._graph:
            raise NotOnnx("it has no graph")
        inputs = [_value_info(r, "input") for r in self._inputs]
        return Graph(
            tuple(t for t in inputs if t.name not in self._initializers),
            tuple(_value_info(r, "output") for r in self._outputs),
            self._ir_version,
        )

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


# ---------------------------------------------------------------------- a kept ValueInfoProto


class _Bad(Exception):
    pass


def _fields(data: bytes) -> Iterable[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one whole protobuf message: an int for a varint or a
    fixed-size field, the bytes of a length-delimited one. _Bad on malformed bytes."""
    pos, end = 0, len(data)

    def varint() -> int:
        nonlocal pos
        result = shift = 0
        for _ in range(10):
            if pos >= end:
                raise _Bad("truncated varint")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise _Bad("varint longer than 10 bytes")

    while pos < end:
        tag = varint()
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise _Bad("field number 0")
        if wire == 0:
            yield field, wire, varint()
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            if pos + n > end:
                raise _Bad("truncated fixed-size field")
            yield field, wire, int.from_bytes(data[pos : pos + n], "little")
            pos += n
        elif wire == 2:
            n = varint()
            if pos + n > end:
                raise _Bad("truncated length-delimited field")
            yield field, wire, data[pos : pos + n]
            pos += n
        else:
            raise _Bad(f"wire type {wire}")


def _signed(v: int) -> int:
    """An int64 read as a varint (a negative one is ten bytes of two's complement)."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _value_info(raw: bytes, kind: str) -> Tensor:
    try:
        return _tensor(raw)
    except _Bad as e:
        raise NotOnnx(f"one of its graph's {kind}s does not decode ({e})") from None


def _tensor(raw: bytes) -> Tensor:
    """ValueInfoProto -> Tensor, as protobuf reads it: the last of a scalar field or oneof
    wins, a repeated message field occurring again is merged into the first."""
    name = ""
    type_kind: str | None = None
    elem_type = 0
    has_shape = False
    dims: list[Dim] = []
    for field, wire, value in _fields(raw):
        if field == _VALUE_INFO_NAME and wire == 2:
            assert isinstance(value, bytes)
            name = value.decode("utf-8", "replace")
        elif field == _VALUE_INFO_TYPE and wire == 2:
            assert isinstance(value, bytes)
            for tf, tw, tv in _fields(value):
                if tf not in _TYPE_KINDS or tw != 2:
                    continue
                if _TYPE_KINDS[tf] != type_kind:  # another member of the oneof clears the last
                    type_kind, elem_type, has_shape, dims = _TYPE_KINDS[tf], 0, False, []
                if tf != _TYPE_TENSOR:
                    continue
                assert isinstance(tv, bytes)
                for f, w, v in _fields(tv):
                    if f == _TENSOR_ELEM_TYPE and w == 0:
                        assert isinstance(v, int)
                        elem_type = _signed(v)
                    elif f == _TENSOR_SHAPE and w == 2:
                        assert isinstance(v, bytes)
                        has_shape = True
                        dims += _shape(v)
    if type_kind is None:
        return Tensor(name, "unknown", None)
    if type_kind != "tensor":
        return Tensor(name, type_kind, None)
    element = ONNX_ELEMENT_TYPES.get(elem_type, "unknown")
    return Tensor(name, element, tuple(dims) if has_shape else None)


def _shape(raw: bytes) -> list[Dim]:
    dims: list[Dim] = []
    for field, wire, value in _fields(raw):
        if field != _SHAPE_DIM or wire != 2:
            continue
        assert isinstance(value, bytes)
        dim: Dim = None
        for f, w, v in _fields(value):
            if f == _DIM_VALUE and w == 0:
                assert isinstance(v, int)
                dim = _signed(v)
            elif f == _DIM_PARAM and w == 2:
                assert isinstance(v, bytes)
                dim = v.decode("utf-8", "replace")
        dims.append(dim)
    return dims


def read_bytes(data: bytes) -> Graph:
    """The graph of a whole ONNX file in memory."""
    reader = OnnxReader()
    reader.feed(data)
    return reader.finish()


def read_file(path: str | Path, chunk: int = CHUNK) -> Graph:
    """The graph of an ONNX file, read in chunks: memory stays about one chunk whatever the size."""
    reader = OnnxReader()
    with open(path, "rb") as f:
        while data := f.read(chunk):
            reader.feed(data)
    return reader.finish()
