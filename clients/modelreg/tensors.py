"""The inference API's tensor wire format (`modelreg.v1.Tensor`) to and from numpy arrays.

One codec for both ends of the agent's inference API: the app's `modelreg.inference.InferenceClient`
and the agent's InferenceService. Tensors travel little-endian and row-major whatever the
array's layout or byte order; decoding is a read-only view on the message's bytes (no copy on a
little-endian machine).
"""

from __future__ import annotations

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


def tensor_to_array(t: inf.Tensor) -> np.ndarray:
    """A read-only view on the tensor's bytes (no copy on a little-endian machine)."""
    if t.dtype not in DTYPES:
        raise TensorError(f"tensor {t.name!r} needs a dtype (DATA_TYPE_FLOAT32, DATA_TYPE_INT64, ...)")
    dtype = np.dtype(DTYPES[t.dtype]).newbyteorder("<")
    shape = tuple(int(d) for d in t.shape)
    if any(d < 0 for d in shape):
        raise TensorError(f"tensor {t.name!r} has a negative dimension in shape {list(shape)}")
    data = t.data  # each read of a bytes field copies it out of the message: read it once
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise TensorError(
            f"tensor {t.name!r}: shape {list(shape)} of {dtype.name} needs {expected} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def add_tensor(tensors: Any, name: str, a: np.ndarray) -> inf.Tensor:
    """Appends `a` to a repeated Tensor field (`request.inputs`, `response.outputs`) in place:
    one copy of the data into the message. Building a Tensor and passing it in a list would
    copy it again, which for megabytes of image tensors costs more than the transport."""
    code = TO_DTYPE.get(a.dtype.newbyteorder("="))
    if code is None:
        raise TensorError(f"tensor {name!r} has dtype {a.dtype}, which the inference API cannot carry")
    data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()  # no-op cast on little-endian
    result: inf.Tensor = tensors.add(name=name, dtype=code, shape=a.shape, data=data)
    return result
