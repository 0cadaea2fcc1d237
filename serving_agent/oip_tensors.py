"""The Open Inference Protocol's tensors (KServe v2 / Triton) to and from numpy arrays.

Inputs come either all as `raw_input_contents` (one little-endian, row-major blob per input, in
the order of `inputs`; what tritonclient sends) or all in each input's typed `contents`. The
response answers in kind: typed `contents` for a request that used them (unless an output is
FP16, which only raw can carry), else `raw_output_contents`. BYTES elements travel raw as a
4-byte little-endian length and the bytes, one after another (Triton's serialization).
Every malformed tensor is a BadInput (INVALID_ARGUMENT) naming the input. The checks and the
little-endian conversion shared with the agent's own tensors are modelreg.tensors'.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from modelreg.oip import grpc_predict_v2_pb2 as pb
from modelreg.tensors import dims, from_le_bytes, to_le_bytes, unique_names
from serving_agent.errors import BadInput
from serving_agent.signature import DATATYPES, FROM_DATATYPE

# The typed `contents` field of each datatype (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _dtype(t: Any) -> np.dtype:
    dtype = FROM_DATATYPE.get(t.datatype)
    if dtype is None:
        raise BadInput(
            f"input {t.name!r} has datatype {t.datatype!r}; the agent takes {', '.join(sorted(FROM_DATATYPE))}"
        )
    return dtype


def _shape(t: Any) -> tuple[int, ...]:
    return dims(f"input {t.name!r}", t.shape, BadInput)


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's inputs as arrays (read-only views on raw bytes: no copy on little-endian)."""
    unique_names([t.name for t in request.inputs], BadInput)
    raw = request.raw_input_contents
    if len(raw):
        if len(raw) != len(request.inputs):
            raise BadInput(
                f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per input, "
                "in the order of `inputs`"
            )
        typed = [t.name for t in request.inputs if t.HasField("contents")]
        if typed:
            raise BadInput(f"inputs {typed} carry `contents` beside raw_input_contents; use one or the other")
        return {t.name: _from_raw(t, data) for t, data in zip(request.inputs, raw, strict=True)}
    return {t.name: _from_contents(t) for t in request.inputs}


def _from_raw(t: Any, data: bytes) -> np.ndarray:
    dtype, shape = _dtype(t), _shape(t)
    if dtype.kind == "O":
        return _bytes_from_raw(t.name, data, math.prod(shape)).reshape(shape)
    return from_le_bytes(data, dtype, shape, f"input {t.name!r}", t.datatype, "raw_input_contents", BadInput)


def _bytes_from_raw(name: str, data: bytes, count: int) -> np.ndarray:
    out: list[bytes] = []
    offset = 0
    view = memoryview(data)
    while offset < len(data):
        if offset + 4 > len(data):
            raise BadInput(f"input {name!r}: BYTES element {len(out)} is cut short in its 4-byte length prefix")
        (n,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + n > len(data):
            raise BadInput(f"input {name!r}: BYTES element {len(out)} declares {n} bytes, {len(data) - offset} left")
        out.append(bytes(view[offset : offset + n]))
        offset += n
    if len(out) != count:
        raise BadInput(f"input {name!r}: its shape holds {count} BYTES elements, raw_input_contents has {len(out)}")
    return np.array(out, dtype=object)


def _from_contents(t: Any) -> np.ndarray:
    dtype, shape = _dtype(t), _shape(t)
    field = CONTENTS_FIELD.get(t.datatype)
    if field is None:
        raise BadInput(f"input {t.name!r} is {t.datatype}, which travels in raw_input_contents only")
    values = getattr(t.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise BadInput(
            f"input {t.name!r}: shape {list(shape)} holds {count} elements, contents.{field} has {len(values)}"
        )
    if dtype == np.dtype(object):
        return np.array(list(values), dtype=object).reshape(shape)
    if dtype.kind in "iu":  # the wire carries 32- or 64-bit values: narrower types are range-checked
        wide = np.array(values, dtype=np.int64 if dtype.kind == "i" else np.uint64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise BadInput(f"input {t.name!r}: contents.{field} holds values out of {t.datatype}'s range")
        return wide.astype(dtype).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


def encode_outputs(response: pb.ModelInferResponse, outputs: dict[str, np.ndarray], raw: bool) -> None:
    """Appends the outputs to `response`: raw_output_contents when `raw` (or when an output is
    FP16, which only raw can carry), else each output's typed contents."""
    raw = raw or any(a.dtype == np.float16 for a in outputs.values())
    for name, a in outputs.items():
        datatype = DATATYPES.get(a.dtype.newbyteorder("="))
        if datatype is None:
            raise BadInput(f"output {name!r} has dtype {a.dtype}, which the protocol cannot carry")
        out = response.outputs.add(name=name, datatype=datatype, shape=a.shape)
        if raw:
            response.raw_output_contents.append(_to_raw(a))
        else:
            getattr(out.contents, CONTENTS_FIELD[datatype]).extend(_to_list(a))


def _to_raw(a: np.ndarray) -> bytes:
    if a.dtype == np.dtype(object):
        parts = []
        for v in a.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode()
            parts += [struct.pack("<I", len(b)), b]
        return b"".join(parts)
    return to_le_bytes(a)


def _to_list(a: np.ndarray) -> list:
    flat = a.reshape(-1)
    if a.dtype == np.dtype(object):
        return [v if isinstance(v, bytes) else str(v).encode() for v in flat]
    return flat.tolist()
