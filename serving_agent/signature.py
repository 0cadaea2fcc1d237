"""A loaded model's signature (its inputs and outputs: name, element type, shape with -1 for a
dynamic dimension) and THE ONE CHECK every inference request passes before it reaches a model,
whichever API it came through (the agent's InferenceService.Predict or the Open Inference
Protocol's ModelInfer).

    sig = loader.signature()                     # read from the onnxruntime session / YOLO model
    check_request(sig, "models/m/versions/3", inputs, output_names)   # BadInput, or None

Element types are numpy dtypes; `np.dtype(object)` stands for BYTES (strings). Messages name
the input, what the model expects and what the request sent, in the Open Inference Protocol's
datatype names (FP32, INT64, ...) with numpy's beside them, so either API's caller can act on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from serving_agent.errors import BadInput

# numpy dtype -> the Open Inference Protocol's datatype name (KServe v2 / Triton).
DATATYPES: dict[np.dtype, str] = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(object): "BYTES",
}
FROM_DATATYPE: dict[str, np.dtype] = {v: k for k, v in DATATYPES.items()}

# onnxruntime's type strings -> the registry's element types (numpy's spelling, and 'string',
# 'bfloat16' where numpy has no dtype); any other is 'unknown'.
ORT_ELEMENT_TYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}


def element_dtype(element_type: str) -> np.dtype | None:
    """The numpy dtype of a registry element type: object for 'string', None for one numpy
    has none for ('bfloat16', 'unknown')."""
    if element_type == "string":
        return np.dtype(object)
    try:
        return np.dtype(element_type)
    except TypeError:
        return None


def datatype(dtype: np.dtype | None) -> str:
    """The protocol's name for a dtype ('FP32'); the dtype's own name for one it has none for."""
    if dtype is None:
        return "unknown"
    return DATATYPES.get(np.dtype(dtype).newbyteorder("="), np.dtype(dtype).name)


def describe(dtype: np.dtype | None) -> str:
    """'FP32 (float32)': both the protocol's and numpy's names, for messages."""
    if dtype is None:
        return "unknown"
    name, np_name = datatype(dtype), np.dtype(dtype).name
    return name if np_name.upper() == name or name == "BYTES" else f"{name} ({np_name})"


#: A dimension as the registry records it: a size, a symbolic name, or None (dynamic, unnamed).
Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. `dtype` None: a type the agent cannot name (any is accepted).
    `shape` None: the rank is unknown (any shape is accepted); -1 is a dynamic dimension.

    `element_type` and `dims` are the same tensor in the registry's exact form, what the agent
    reports (serving_agent.signature_report): numpy's spelling ('float32', 'string',
    'bfloat16'; '' for `dtype`'s name) and the dimensions with their symbolic names (None:
    `shape`'s, -1 unnamed). Requests are checked against `dtype` and `shape` only."""

    name: str
    dtype: np.dtype | None
    shape: tuple[int, ...] | None
    element_type: str = ""
    dims: tuple[Dim, ...] | None = None

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(w < 0 or w == g for w, g in zip(self.shape, shape, strict=True))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    platform: str = "onnxruntime_onnx"  # the Open Inference Protocol's `platform` (Triton's names)

    # Derived once per signature (a loaded version's is frozen): every request reads them.
    @cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @cached_property
    def inputs_by_name(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.inputs}

    @cached_property
    def _output_set(self) -> frozenset[str]:
        return frozenset(self.output_names)

    def input(self, name: str) -> TensorSpec | None:
        return self.inputs_by_name.get(name)

    def has_output(self, name: str) -> bool:
        return name in self._output_set


def ort_shape(shape: Sequence[object] | None) -> tuple[int, ...] | None:
    """onnxruntime's shape (ints, symbolic names or None per dimension) with -1 for dynamic."""
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def ort_dims(shape: Sequence[object] | None) -> tuple[Dim, ...] | None:
    """onnxruntime's shape as the registry records it: sizes, symbolic names, None for unnamed."""
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and d >= 0 else d if isinstance(d, str) and d else None for d in shape)


def from_ort(session, platform: str = "onnxruntime_onnx") -> Signature:
    """The signature of an onnxruntime.InferenceSession."""

    def spec(arg) -> TensorSpec:
        element = ORT_ELEMENT_TYPES.get(arg.type, "unknown")
        return TensorSpec(arg.name, element_dtype(element), ort_shape(arg.shape), element, ort_dims(arg.shape))

    inputs, outputs = session.get_inputs(), session.get_outputs()
    return Signature(tuple(spec(i) for i in inputs), tuple(spec(o) for o in outputs), platform)


def check_request(
    sig: Signature, served_by: str, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
) -> None:
    """Raises BadInput (INVALID_ARGUMENT) unless `inputs` are exactly the model's inputs, each of
    its dtype and a shape it accepts, and every requested output exists. `served_by` names the
    version in the message ('models/m/versions/3'). Costs microseconds: it runs on every request."""
    by_name = sig.inputs_by_name
    if len(inputs) != len(by_name) or not all(n in by_name for n in inputs):
        wanted = list(sig.input_names)
        missing = [n for n in wanted if n not in inputs]
        extra = [n for n in inputs if n not in by_name]
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unknown {extra}"] if extra else []
        raise BadInput(f"{served_by} takes inputs {wanted}; {'; '.join(parts)}")
    for spec in sig.inputs:
        arr = inputs[spec.name]
        dtype_ok = spec.dtype is None or arr.dtype.newbyteorder("=") == spec.dtype
        if not dtype_ok or not spec.accepts_shape(arr.shape):
            raise BadInput(
                f"input {spec.name!r} of {served_by}: expected {describe(spec.dtype)} with shape "
                f"{_shape(spec.shape)}, got {describe(arr.dtype)} with shape {list(arr.shape)}"
            )
    if output_names and not all(sig.has_output(n) for n in output_names):
        unknown = [n for n in output_names if not sig.has_output(n)]
        raise BadInput(f"unknown outputs {unknown}; {served_by} has outputs {list(sig.output_names)}")


def _shape(shape: tuple[int, ...] | None) -> str:
    return "any" if shape is None else str(list(shape)) + (" (-1: any size)" if -1 in shape else "")
