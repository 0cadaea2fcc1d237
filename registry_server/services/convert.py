"""Proto <-> domain conversion. Nothing else."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as res
from registry_server.domain import deployments as dd
from registry_server.domain import models as dm
from registry_server.domain.names import model_name, version_name
from registry_server.domain.signatures import Source
from registry_server.domain.stages import Stage
from registry_server.errors import InvalidArgument
from registry_server.services.signature_convert import signature_from_proto, signature_to_proto

STAGE_TO_PROTO = {
    Stage.NONE: res.STAGE_NONE,
    Stage.STAGING: res.STAGE_STAGING,
    Stage.PRODUCTION: res.STAGE_PRODUCTION,
    Stage.ARCHIVED: res.STAGE_ARCHIVED,
}
STAGE_FROM_PROTO: dict[int, Stage] = {v: k for k, v in STAGE_TO_PROTO.items()}

FORMAT_TO_PROTO = {
    dm.ArtifactFormat.ONNX: res.ARTIFACT_FORMAT_ONNX,
    dm.ArtifactFormat.ULTRALYTICS_PT: res.ARTIFACT_FORMAT_ULTRALYTICS_PT,
    dm.ArtifactFormat.BUNDLE: res.ARTIFACT_FORMAT_BUNDLE,
    dm.ArtifactFormat.OTHER: res.ARTIFACT_FORMAT_OTHER,
}
FORMAT_FROM_PROTO = {v: k for k, v in FORMAT_TO_PROTO.items()}

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(value)
    return t


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value or {})
    return s


def from_struct(value: struct_pb2.Struct, field: str = "config") -> dict[str, Any]:
    """The Struct as JSON. A Struct can carry NaN and +-Infinity, JSON cannot: INVALID_ARGUMENT
    naming where (`config.lr`, `config.layers[2]`)."""
    try:
        out = json_format.MessageToDict(value)
    except ValueError:
        where, number = _non_finite(value, field)
        raise InvalidArgument(
            f"{where} is {number}: JSON has no NaN or Infinity; send a finite number, null, or a string"
        ) from None
    # JSON has one number type; keep integral values integral ({"epochs": 100}, not 100.0).
    return _ints(out)


def _non_finite(value: Any, path: str) -> tuple[str, float]:
    """The path and value of the first NaN or infinite number in a Struct, Value or ListValue."""
    if isinstance(value, struct_pb2.Struct):
        for key, item in value.fields.items():
            found = _non_finite(item, f"{path}.{key}")
            if found[0]:
                return found
    elif isinstance(value, struct_pb2.ListValue):
        for i, item in enumerate(value.values):
            found = _non_finite(item, f"{path}[{i}]")
            if found[0]:
                return found
    elif isinstance(value, struct_pb2.Value):
        kind = value.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(value.number_value):
            return path, value.number_value
        if kind in ("struct_value", "list_value"):
            return _non_finite(getattr(value, kind), path)
    return "", 0.0


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def timestamp(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    """A Timestamp within its documented range (years 1 to 9999) as an aware datetime."""
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            f"{field} is out of range ({value.seconds} s, {value.nanos} ns): a Timestamp is between "
            "0001-01-01 and 9999-12-31 with nanos from 0 to 999,999,999"
        ) from None


# google.protobuf.Duration's documented range: about 10,000 years either way.
MAX_DURATION_SECONDS = 315_576_000_000


def duration(value: duration_pb2.Duration, field: str) -> timedelta:
    """A Duration within its documented range (and Python's) as a timedelta."""
    if abs(value.seconds) > MAX_DURATION_SECONDS or abs(value.nanos) > 999_999_999:
        raise InvalidArgument(
            f"{field} is out of range ({value.seconds} s, {value.nanos} ns): a Duration has at most "
            f"{MAX_DURATION_SECONDS} seconds and nanos within +-999,999,999"
        )
    try:
        return value.ToTimedelta()
    except (OverflowError, ValueError):
        raise InvalidArgument(f"{field} is out of range ({value.seconds} s); give a shorter duration") from None


def stage_from_proto(value: int, field: str = "stage") -> Stage:
    if value not in STAGE_FROM_PROTO:
        raise InvalidArgument(f"'{field}' must be one of STAGE_NONE, STAGE_STAGING, STAGE_PRODUCTION, STAGE_ARCHIVED")
    return STAGE_FROM_PROTO[value]


def model_to_proto(m: dm.Model) -> res.Model:
    return res.Model(
        name=model_name(m.name),
        description=m.description,
        project=m.project,
        model_type=m.model_type,
        default_config=struct(m.default_config),
        tags=m.tags,
        production_version=m.production_version,
        latest_version=m.latest_version,
        created_by=m.created_by,
        create_time=ts(m.create_time),
        update_time=ts(m.update_time),
    )


def version_to_proto(v: dm.ModelVersion) -> res.ModelVersion:
    return res.ModelVersion(
        name=version_name(v.model, v.version),
        version=v.version,
        state=res.MODEL_VERSION_STATE_READY,
        stage=STAGE_TO_PROTO[v.stage],
        format=FORMAT_TO_PROTO[v.format],
        model_type=v.model_type,
        config=struct(v.config),
        metrics=v.metrics,
        metric_history={
            k: res.MetricSeries(points=[res.MetricPoint(step=int(s), value=float(x)) for s, x in pts])
            for k, pts in v.metric_history.items()
        },
        lineage=res.Lineage(
            dataset_id=v.lineage.dataset_id,
            dataset_hash=v.lineage.dataset_hash,
            parent_version=v.lineage.parent_version,
            run_id=v.lineage.run_id,
            code_revision=v.lineage.code_revision,
        ),
        tags=v.tags,
        description=v.description,
        created_by=v.created_by,
        create_time=ts(v.create_time),
        update_time=ts(v.update_time),
        artifact=res.Artifact(
            sha256=v.sha256,
            size_bytes=v.size_bytes,
            filename=v.filename,
            download_filename=v.download_filename,
        ),
        request_id=v.request_id,
        aliases=v.aliases,
        signature=signature_to_proto(v.signature),
    )


def transition_to_proto(t: dm.StageTransition) -> res.StageTransition:
    return res.StageTransition(
        model_version=version_name(t.model, t.version),
        from_stage=STAGE_TO_PROTO[t.from_stage],
        to_stage=STAGE_TO_PROTO[t.to_stage],
        actor=t.actor,
        reason=t.reason,
        create_time=ts(t.create_time),
        sequence=t.sequence,
        token_name=t.token_name,
        on_behalf_of=t.on_behalf_of,
    )


def comparison_to_proto(c: dm.Comparison) -> rs.CompareModelVersionsResponse:
    return rs.CompareModelVersionsResponse(
        versions=[
            rs.VersionComparison(
                version=v.version,
                stage=STAGE_TO_PROTO[v.stage],
                metrics=v.metrics,
                config=struct(v.config),
                size_bytes=v.size_bytes,
                create_time=ts(v.create_time),
                update_time=ts(v.update_time),
                deltas=c.deltas.get(v.version, {}),
                signature=signature_to_proto(v.signature),
                signature_differs=bool(c.signature_changes.get(v.version)),
                signature_changes=c.signature_changes.get(v.version, []),
            )
            for v in c.versions
        ],
        metric_keys=c.metric_keys,
        production_version=c.production.version if c.production else 0,
    )


def new_version_from_header(h: rs.RegisterModelVersionHeader, model: str) -> dm.NewVersion:
    if h.format not in FORMAT_FROM_PROTO and h.format != res.ARTIFACT_FORMAT_UNSPECIFIED:
        raise InvalidArgument(
            f"unknown header.format {h.format}; use ARTIFACT_FORMAT_ONNX, _ULTRALYTICS_PT, _BUNDLE or _OTHER"
        )
    fmt = FORMAT_FROM_PROTO.get(h.format) or dm.infer_format(h.filename)
    return dm.NewVersion(
        model=model,
        create_model=h.create_model,
        format=fmt,
        model_type=h.model_type,
        config=from_struct(h.config, "header.config"),
        metrics=dict(h.metrics),
        metric_history={k: [(p.step, p.value) for p in s.points] for k, s in h.metric_history.items()},
        lineage=dm.Lineage(
            dataset_id=h.lineage.dataset_id,
            dataset_hash=h.lineage.dataset_hash,
            parent_version=h.lineage.parent_version,
            run_id=h.lineage.run_id,
            code_revision=h.lineage.code_revision,
        ),
        tags=dict(h.tags),
        description=h.description,
        filename=h.filename,
        declared_sha256=h.sha256.lower(),
        declared_size=h.size_bytes,
        project=h.project,
        request_id=h.request_id,
        signature=signature_from_proto(h.signature, Source.CLIENT) if h.HasField("signature") else None,
    )


# ---------------------------------------------------------------------- paging


def page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size must not be negative; 0 means the default (50)")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(kind: str, key: str | int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{key}".encode()).decode().rstrip("=")


def decode_token(kind: str, token: str) -> str | None:
    """Returns the key inside an opaque page token, or None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        got, key = raw.split(":", 1)
    except ValueError:
        got, key = "", ""
    if got != kind:
        raise InvalidArgument("page_token is not valid here: pass the next_page_token of the same list call")
    return key


def decode_int_token(kind: str, token: str, default: int) -> int:
    key = decode_token(kind, token)
    if key is None:
        return default
    try:
        number = int(key)
    except ValueError:
        number = -1
    if not 0 <= number < 2**63:  # what a list call hands out: a bigint key
        raise InvalidArgument("page_token is malformed: pass the next_page_token of the same list call")
    return number


# ---------------------------------------------------------------------- deployments


def artifact_ref_to_proto(r: dd.ArtifactRef | None) -> res.ArtifactRef | None:
    if r is None:
        return None
    return res.ArtifactRef(
        version=r.name,
        version_number=r.version,
        sha256=r.sha256,
        size_bytes=r.size_bytes,
        format=FORMAT_TO_PROTO[r.format],
        filename=r.filename,
        config=struct(r.config),
    )


def policy_to_proto(p: dd.CanaryPolicy) -> res.CanaryPolicy:
    return res.CanaryPolicy(
        max_error_rate=p.max_error_rate,
        max_latency_ratio=p.max_latency_ratio,
        min_requests=p.min_requests,
        auto_promote_after=p.auto_promote_after,
    )


def policy_from_proto(p: res.CanaryPolicy) -> dd.CanaryPolicy:
    return dd.CanaryPolicy(
        max_error_rate=p.max_error_rate,
        max_latency_ratio=p.max_latency_ratio,
        min_requests=p.min_requests if p.min_requests else 100,
        auto_promote_after=p.auto_promote_after,
    )


def deployment_to_proto(d: dd.Deployment, *, with_policy: bool = True) -> res.Deployment:
    return res.Deployment(
        name=f"models/{d.model}/deployment",
        stable=artifact_ref_to_proto(d.stable),
        canary=artifact_ref_to_proto(d.canary),
        canary_weight=d.canary_weight,
        revision=d.revision,
        etag=d.etag,
        policy=policy_to_proto(d.policy) if with_policy else None,
        updated_by=d.updated_by,
        update_time=ts(d.update_time),
    )
