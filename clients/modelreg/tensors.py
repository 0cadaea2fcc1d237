"""The inference API's tensor wire format (`modelreg.v1.Tensor`) to and from numpy arrays.

One codec for both ends of the agent's inference API: the app's `modelreg.inference.InferenceClient`
and the agent's InferenceService. Tensors travel little-endian and row-major whatever the
array's layout or byte order; decoding is a read-only view on the message's bytes (no copy on a
little-endian machine).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np

from modelreg import errors
from modelreg.v1 import inference_service_pb2 as inf

DTYPES: dict[int, type[np.generic]] = {
    inf.DATA_TYPE_FLOAT32: np.float32,
    inf.DATA_TYPE_FLOAT64: np.float64,
    inf.DATA_TYPE_FLOAT16: np.float16,
    inf.DATA_TYPE_INT8: np.int8,
    inf.DATA_TYPE_INT16: np.int16,
    inf.DATA_TYPE_INT32: np.int32,
    inf.DATA_TYPE_INT64: np.int64,
    inf.DATA_TYPE_UINT8: np.uint8,
    inf.DATA_TYPE_BOOL: np.bool_,
}
TO_DTYPE: dict[np.dtype[Any], int] = {np.dtype(v): k for k, v in DTYPES.items()}


class TensorError(errors.InvalidArgument):
    """A tensor the wire format cannot carry, or bytes that do not match a tensor's shape and dtype.
    Its code is INVALID_ARGUMENT, which is what the agent answers with."""

    def __init__(self, message: str):
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message)


# ---------------------------------------------------------------- shared with the agent's
# Open Inference Protocol codec (serving_agent.oip_tensors), whose tensors travel the same way.
# `error` builds the exception a check raises: TensorError here, the agent's BadInput there.

Error = Callable[[str], Exception]


def unique_names(names: Sequence[str], error: Error = TensorError) -> None:
    """Refuses a request that names an input twice (its tensors become a dict by name)."""
    if len(set(names)) != len(names):
        raise error(f"input names must be unique; got {list(names)}")


def dims(what: str, shape: Sequence[int], error: Error = TensorError) -> tuple[int, ...]:
    """A tensor's shape as ints; refuses a negative dimension. `what` names it: "tensor 'x'"."""
    out = tuple(int(d) for d in shape)
    if any(d < 0 for d in out):
        raise error(f"{what} has a negative dimension in shape {list(out)}")
    return out


def from_le_bytes(
    data: bytes,
    dtype: np.dtype[Any],
    shape: tuple[int, ...],
    what: str,
    type_name: str = "",
    source: str = "",
    error: Error = TensorError,
) -> np.ndarray:
    """Little-endian, row-major `data` as a read-only array of `dtype` in native order (a view,
    no copy, on a little-endian machine). Refuses a byte count that does not match the shape:
    "{what}: shape [1, 4] of {type_name} needs 16 bytes[ of {source}], got 15"."""
    wire = np.dtype(dtype).newbyteorder("<")
    expected = math.prod(shape) * wire.itemsize
    if len(data) != expected:
        of = f" of {source}" if source else ""
        raise error(
            f"{what}: shape {list(shape)} of {type_name or wire.name} needs {expected} bytes{of}, got {len(data)}"
        )
    return np.frombuffer(data, dtype=wire).reshape(shape).astype(wire.newbyteorder("="), copy=False)


def to_le_bytes(a: np.ndarray) -> bytes:
    """`a`'s elements little-endian and row-major, whatever its layout and byte order (one copy;
    the cast is a no-op on a little-endian machine)."""
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


# ---------------------------------------------------------------- modelreg.v1.Tensor


def tensor_to_array(t: inf.Tensor) -> np.ndarray:
    """A read-only view on the tensor's bytes (no copy on a little-endian machine)."""
    if t.dtype not in DTYPES:
        raise TensorError(f"tensor {t.name!r} needs a dtype (DATA_TYPE_FLOAT32, DATA_TYPE_INT64, ...)")
    what = f"tensor {t.name!r}"
    shape = dims(what, t.shape)
    # each read of a bytes field copies it out of the message: read it once
    return from_le_bytes(t.data, np.dtype(DTYPES[t.dtype]), shape, what)


def add_tensor(tensors: Any, name: str, a: np.ndarray) -> inf.Tensor:
    """Appends `a` to a repeated Tensor field (`request.inputs`, `response.outputs`) in place:
    one copy of the data into the message. Building a Tensor and passing it in a list would
    copy it again, which for megabytes of image tensors costs more than the transport."""
    code = TO_DTYPE.get(a.dtype.newbyteorder("="))
    if code is None:
        raise TensorError(f"tensor {name!r} has dtype {a.dtype}, which the inference API cannot carry")
    result: inf.Tensor = tensors.add(name=name, dtype=code, shape=a.shape, data=to_le_bytes(a))
    return result
