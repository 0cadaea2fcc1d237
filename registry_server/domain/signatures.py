"""Version signatures as pure values: a model's inputs and outputs (name, element type, shape
with symbolic axes), their JSON form in Postgres, validation of one a client sent, and the
comparison `compare`, the `same-signature` gate and the registration check share.

Two tensors MATCH when their names and element types are equal and their shapes have the
same rank with, axis by axis, equal fixed sizes or two dynamic axes (a symbolic axis matches
any other symbolic or unnamed axis whatever its name: `batch` and `N` take the same arrays).
A fixed size never matches a dynamic axis: an app built against one breaks on the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from registry_server.errors import InvalidArgument

#: A shape's axis: a fixed size, a symbolic name, or None (dynamic, unnamed).
Dim = int | str | None

MAX_TENSORS = 1000
MAX_RANK = 64
ELEMENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_NAME = 1024

#: ONNX TensorProto.DataType numbers -> the numpy spelling the registry stores.
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


class Source(StrEnum):
    ARTIFACT = "artifact"  # read by the registry from the stored ONNX graph
    CLIENT = "client"  # sent by the registering client, unverified (not ONNX)
    AGENT = "agent"  # reported by the first agent that loaded the version


@dataclass(frozen=True)
class TensorSpec:
    name: str
    element_type: str
    shape: tuple[Dim, ...] | None  # None: the rank is unknown

    def shape_text(self) -> str:
        return shape_text(self.shape)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "element_type": self.element_type, "shape": _json_shape(self.shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        shape = d.get("shape")
        return cls(d["name"], d["element_type"], None if shape is None else tuple(shape))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: Source = Source.ARTIFACT

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
            "source": self.source.value,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in d.get("inputs", ())),
            tuple(TensorSpec.from_dict(t) for t in d.get("outputs", ())),
            Source(d.get("source", Source.ARTIFACT.value)),
        )

    def with_source(self, source: Source) -> Signature:
        return Signature(self.inputs, self.outputs, source)


def shape_text(shape: tuple[Dim, ...] | None) -> str:
    """`[batch, 3, 640, 640]`; `?` for an unnamed dynamic axis; `[...]` for an unknown rank."""
    if shape is None:
        return "[...]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _json_shape(shape: tuple[Dim, ...] | None) -> list[Dim] | None:
    return None if shape is None else list(shape)


def _dims_match(a: Dim, b: Dim) -> bool:
    if isinstance(a, int) or isinstance(b, int):
        return a == b
    return True  # both dynamic (symbolic or unnamed)


def shapes_match(a: tuple[Dim, ...] | None, b: tuple[Dim, ...] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and all(_dims_match(x, y) for x, y in zip(a, b, strict=True))


def tensor_changes(kind: str, before: tuple[TensorSpec, ...], after: tuple[TensorSpec, ...]) -> list[str]:
    """One sentence per difference between two lists of tensors (`kind` is `input` or
    `output`), in `before`'s order, then what `after` adds. Empty when they match."""
    old = {t.name: t for t in before}
    new = {t.name: t for t in after}
    out: list[str] = []
    for t in before:
        n = new.get(t.name)
        if n is None:
            out.append(f"{kind} {t.name!r} ({t.element_type} {t.shape_text()}) is gone")
            continue
        if n.element_type != t.element_type:
            out.append(f"{kind} {t.name!r} changed element type from {t.element_type} to {n.element_type}")
        if not shapes_match(t.shape, n.shape):
            out.append(f"{kind} {t.name!r} changed shape from {t.shape_text()} to {n.shape_text()}")
    for n in after:
        if n.name not in old:
            out.append(f"{kind} {n.name!r} ({n.element_type} {n.shape_text()}) is new")
    return out


def input_changes(before: Signature, after: Signature) -> list[str]:
    """How `after`'s inputs differ from `before`'s (what the `same-signature` gate checks)."""
    return tensor_changes("input", before.inputs, after.inputs)


def changes(before: Signature, after: Signature) -> list[str]:
    """How `after` differs from `before`, inputs then outputs (what compare flags)."""
    return input_changes(before, after) + tensor_changes("output", before.outputs, after.outputs)


def disagreement(read: Signature, sent: Signature) -> list[str]:
    """Where a client-sent signature disagrees with the one read from the artifact. They
    must be equal, tensor order and symbol names included; empty when they are."""
    if (read.inputs, read.outputs) == (sent.inputs, sent.outputs):
        return []
    return changes(read, sent) or ["the tensors' order or the names of their symbolic axes differ"]


def validate(sig: Signature, field_name: str) -> None:
    """INVALID_ARGUMENT for a client-sent signature that cannot be right."""
    for kind, tensors in (("inputs", sig.inputs), ("outputs", sig.outputs)):
        if len(tensors) > MAX_TENSORS:
            raise InvalidArgument(f"{field_name}.{kind} has {len(tensors)} tensors; at most {MAX_TENSORS} are allowed")
        seen: set[str] = set()
        for i, t in enumerate(tensors):
            where = f"{field_name}.{kind}[{i}]"
            if not t.name or len(t.name) > MAX_NAME:
                raise InvalidArgument(f"{where}.name must be 1 to {MAX_NAME} characters")
            if t.name in seen:
                raise InvalidArgument(f"{where}.name {t.name!r} appears twice; tensor names are unique")
            seen.add(t.name)
            if not ELEMENT_TYPE_RE.match(t.element_type):
                raise InvalidArgument(
                    f"{where}.element_type {t.element_type!r} is not an element type: use numpy's spelling, "
                    "e.g. float32, int64, uint8, bool"
                )
            if t.shape is not None:
                if len(t.shape) > MAX_RANK:
                    raise InvalidArgument(f"{where}.shape has {len(t.shape)} axes; at most {MAX_RANK} are allowed")
                for d in t.shape:
                    if isinstance(d, int) and d < 0:
                        raise InvalidArgument(
                            f"{where}.shape has size {d}; sizes are 0 or more (use a symbol for a dynamic axis)"
                        )
                    if isinstance(d, str) and (not d or len(d) > MAX_NAME):
                        raise InvalidArgument(f"{where}.shape has a symbol of {len(d)} characters; use 1 to {MAX_NAME}")
