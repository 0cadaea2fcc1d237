"""What the source declares: per model, the desired stable and canary versions.

OMITTING A VERSION FROM THE DESIRED STATE INSTRUCTS THE MANAGER TO UNLOAD IT (once a
desired version serves; see policy.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT_EXT = {"onnx": "onnx", "ultralytics_pt": "pt"}


@dataclass(frozen=True)
class VersionSpec:
    model: str  # model id, without "models/"
    version: int
    sha256: str
    format: str = "onnx"  # onnx | ultralytics_pt | bundle | other
    size_bytes: int = 0
    filename: str = ""
    config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        return f"models/{self.model}/versions/{self.version}"

    @property
    def extension(self) -> str:
        return FORMAT_EXT.get(self.format, "bin")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VersionSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class Desired:
    """What one model should serve: the deployment's stable version and its canary, which
    takes `weight` percent of requests (weight is 0 without a canary). Desired() is a model
    with nothing to serve (no production version, or deleted)."""

    stable: VersionSpec | None = None
    canary: VersionSpec | None = None
    weight: int = 0

    def versions(self) -> dict[int, VersionSpec]:
        out = {}
        for s in (self.stable, self.canary):
            if s is not None:
                out[s.version] = s
        return out

    def to_dict(self) -> dict:
        return {
            "stable": self.stable.to_dict() if self.stable else None,
            "canary": self.canary.to_dict() if self.canary else None,
            "weight": self.weight,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Desired:
        return cls(
            stable=VersionSpec.from_dict(d["stable"]) if d.get("stable") else None,
            canary=VersionSpec.from_dict(d["canary"]) if d.get("canary") else None,
            weight=int(d.get("weight") or 0),
        )
