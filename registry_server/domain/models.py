"""Domain records and the rules for versions: config merge, formats, names, comparison."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from registry_server.domain import signatures as ds
from registry_server.domain.stages import Stage
from registry_server.errors import FailedPrecondition, InvalidArgument

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_REQUEST_ID = 128
MAX_TAGS = 64


class ArtifactFormat(enum.StrEnum):
    ONNX = "onnx"
    ULTRALYTICS_PT = "ultralytics_pt"
    BUNDLE = "bundle"
    OTHER = "other"

    @property
    def extension(self) -> str:
        return {"onnx": "onnx", "ultralytics_pt": "pt", "bundle": "tar", "other": "bin"}[self.value]


def infer_format(filename: str) -> ArtifactFormat:
    lower = (filename or "").lower()
    if lower.endswith(".onnx"):
        return ArtifactFormat.ONNX
    if lower.endswith(".pt"):
        return ArtifactFormat.ULTRALYTICS_PT
    if lower.endswith(".tar") or lower.endswith(".modelreg.tar"):
        return ArtifactFormat.BUNDLE
    return ArtifactFormat.OTHER


@dataclass
class Model:
    name: str
    description: str = ""
    project: str = ""
    model_type: str = ""
    default_config: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    production_version: int = 0
    latest_version: int = 0
    created_by: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass
class Lineage:
    dataset_id: str = ""
    dataset_hash: str = ""
    parent_version: int = 0
    run_id: str = ""
    code_revision: str = ""


@dataclass
class ModelVersion:
    model: str
    version: int
    stage: Stage = Stage.NONE
    format: ArtifactFormat = ArtifactFormat.OTHER
    model_type: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    metric_history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    lineage: Lineage = field(default_factory=Lineage)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    created_by: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None
    sha256: str = ""
    size_bytes: int = 0
    filename: str = ""
    request_id: str = ""
    # The named aliases pointing at it (`champion`), by name; empty where not loaded.
    aliases: tuple[str, ...] = ()
    # Its inputs and outputs; None while unknown. Set once, never replaced.
    signature: ds.Signature | None = None

    @property
    def download_filename(self) -> str:
        return download_filename(self.model, self.version, self.model_type, self.format)


@dataclass
class NewVersion:
    """What a registration asks for, validated, before the bytes arrive."""

    model: str
    create_model: bool
    format: ArtifactFormat
    model_type: str
    config: dict[str, Any]
    metrics: dict[str, float]
    metric_history: dict[str, list[tuple[int, float]]]
    lineage: Lineage
    tags: dict[str, str]
    description: str
    filename: str
    declared_sha256: str
    declared_size: int
    request_id: str
    # The project of a model that `create_model` creates; empty means `default`.
    project: str = ""
    # The signature the client sent, if any (source CLIENT until the registry reads its own).
    signature: ds.Signature | None = None


@dataclass
class StageTransition:
    model: str
    version: int
    from_stage: Stage
    to_stage: Stage
    actor: str
    reason: str
    create_time: datetime
    sequence: int
    token_name: str = ""  # the token the actor authenticated with
    on_behalf_of: str = ""  # x-modelreg-actor text, with auth on


def merge_config(defaults: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """The seed's `{**defaults, **user}`: the caller's keys win, the rest come from defaults."""
    return {**(defaults or {}), **(user or {})}


def download_filename(model: str, version: int, model_type: str, fmt: ArtifactFormat) -> str:
    """Self-describing: `{model}_v{version}_{model_type}.{ext}`."""
    mtype = re.sub(r"[^A-Za-z0-9._-]+", "-", model_type or "model")
    return f"{model}_v{version}_{mtype}.{fmt.extension}"


def validate_new_version(nv: NewVersion) -> None:
    if nv.declared_sha256 and not SHA256_RE.match(nv.declared_sha256):
        raise InvalidArgument(
            f"header.sha256 {nv.declared_sha256!r} is not a sha256: give 64 lowercase hex characters or leave it empty"
        )
    if nv.declared_size < 0:
        raise InvalidArgument("header.size_bytes must not be negative")
    if len(nv.request_id) > MAX_REQUEST_ID:
        raise InvalidArgument(f"header.request_id is longer than {MAX_REQUEST_ID} characters; use a shorter key")
    for k, v in nv.metrics.items():
        if not k:
            raise InvalidArgument("metric names must not be empty")
        if math.isnan(v) or math.isinf(v):
            raise InvalidArgument(f"metric {k!r} is {v}; metrics must be finite numbers")
    for k, points in nv.metric_history.items():
        if not k:
            raise InvalidArgument("metric_history names must not be empty")
        for step, value in points:
            if not math.isfinite(value):
                raise InvalidArgument(
                    f"metric_history {k!r} is {value} at step {step}; metric values must be finite numbers "
                    "(leave the point out, or log a bounded value)"
                )
    validate_tags(nv.tags, "header.tags")
    if nv.signature is not None:
        ds.validate(nv.signature, "header.signature")
    if nv.lineage.parent_version < 0:
        raise InvalidArgument("lineage.parent_version must be a version number or 0")


def validate_tags(tags: dict[str, str], field_name: str) -> None:
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(f"{field_name} has {len(tags)} entries; at most {MAX_TAGS} are allowed")
    for k in tags:
        if not k or len(k) > 128:
            raise InvalidArgument(f"{field_name} key {k!r} must be 1 to 128 characters")


@dataclass
class Comparison:
    versions: list[ModelVersion]
    metric_keys: list[str]
    production: ModelVersion | None
    deltas: dict[int, dict[str, float]]
    # Per version: how its signature differs from production's (empty: the same, or one of
    # the two unknown, or no production version).
    signature_changes: dict[int, list[str]] = field(default_factory=dict)


def compare(versions: list[ModelVersion], production: ModelVersion | None) -> Comparison:
    """The seed's compare: metric keys discovered from the data, deltas against production,
    and the signature changes against production's (a breaking change for the app)."""
    keys = sorted({k for v in versions for k in v.metrics})
    deltas: dict[int, dict[str, float]] = {}
    changes: dict[int, list[str]] = {}
    for v in versions:
        if production is None:
            deltas[v.version] = {}
            changes[v.version] = []
            continue
        deltas[v.version] = {k: v.metrics[k] - production.metrics[k] for k in v.metrics if k in production.metrics}
        ps, vs = production.signature, v.signature
        changes[v.version] = ds.changes(ps, vs) if ps and vs and v.version != production.version else []
    return Comparison(versions, keys, production, deltas, changes)


def check_deletable_model(model: Model) -> None:
    """A model with a production version is serving: archive it first."""
    if model.production_version:
        raise FailedPrecondition(
            f"model 'models/{model.name}' has version {model.production_version} in production; "
            f"archive it first ('modelreg promote {model.name} {model.production_version} archived') "
            "and then delete the model"
        )
