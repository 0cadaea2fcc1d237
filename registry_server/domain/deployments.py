"""Deployment rules: what agents should serve for a model (stable, canary, weight), how it
may change, and the canary policy's verdict. Pure functions, no I/O.

The stable version IS the model's production version. A canary is another READY version
that agents load beside it and route `weight` percent of requests to.

Every write that can change what agents serve is planned here: given the model's current
`Deployment` and the version the request names (loaded under the model's row lock by the
use case), a `plan_*` function returns a `Plan` (the stage moves, the deployment after them
and the events to emit) or raises a typed refusal. Storage persists the plan as given.
OMITTING A VERSION FROM A DEPLOYMENT INSTRUCTS AGENTS TO UNLOAD IT.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from registry_server.domain.events import EventDraft
from registry_server.domain.models import ArtifactFormat, ModelVersion, download_filename
from registry_server.domain.stages import Stage, check_stage_move
from registry_server.errors import Aborted, FailedPrecondition, InvalidArgument


@dataclass(frozen=True)
class ArtifactRef:
    """Everything an agent needs to fetch, verify and load one version."""

    model: str
    version: int
    sha256: str
    size_bytes: int = 0
    format: ArtifactFormat = ArtifactFormat.OTHER
    filename: str = ""
    config: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def name(self) -> str:
        return f"models/{self.model}/versions/{self.version}"

    @classmethod
    def of(cls, v: ModelVersion) -> ArtifactRef:
        return cls(v.model, v.version, v.sha256, v.size_bytes, v.format, v.download_filename, v.config)

    @classmethod
    def from_row(
        cls, model: str, version: int, sha256: str, size: int, fmt: str, model_type: str, config: dict[str, Any] | None
    ) -> ArtifactRef:
        f = ArtifactFormat(fmt)
        return cls(model, version, sha256, size, f, download_filename(model, version, model_type, f), config or {})

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "format": self.format.value,
            "filename": self.filename,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, model: str, d: dict[str, Any]) -> ArtifactRef:
        return cls(
            model=model,
            version=int(d["version"]),
            sha256=d.get("sha256", ""),
            size_bytes=int(d.get("size_bytes", 0)),
            format=ArtifactFormat(d.get("format") or "other"),
            filename=d.get("filename", ""),
            config=d.get("config") or {},
        )


@dataclass(frozen=True)
class VersionInfo:
    """A version as a deployment write sees it: its artifact and its current stage."""

    ref: ArtifactRef
    stage: Stage

    @property
    def version(self) -> int:
        return self.ref.version


# ---------------------------------------------------------------------- canary policy


@dataclass(frozen=True)
class CanaryPolicy:
    """When the registry judges a canary by itself. Zero disables a limit."""

    # Abort when the canary's error rate exceeds this fraction (0.05 = 5 %).
    max_error_rate: float = 0.0
    # Abort when the canary's p95 latency exceeds this multiple of stable's.
    max_latency_ratio: float = 0.0
    # Judge only once the canary has served at least this many requests.
    min_requests: int = 100
    # Promote by itself once the canary served this many requests within the limits (0 = never).
    auto_promote_after: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.max_error_rate or self.max_latency_ratio or self.auto_promote_after)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CanaryPolicy:
        d = d or {}
        return cls(
            max_error_rate=float(d.get("max_error_rate", 0.0)),
            max_latency_ratio=float(d.get("max_latency_ratio", 0.0)),
            min_requests=int(d.get("min_requests", 100)),
            auto_promote_after=int(d.get("auto_promote_after", 0)),
        )

    def validate(self) -> None:
        if not 0 <= self.max_error_rate <= 1:
            raise InvalidArgument("max_error_rate must be a fraction from 0 to 1 (0.05 means 5 %); 0 disables it")
        if not math.isfinite(self.max_latency_ratio) or self.max_latency_ratio < 0:
            # NaN passes `< 0` and Infinity would never trip; neither is stored as JSON.
            raise InvalidArgument(
                f"max_latency_ratio is {self.max_latency_ratio}: give 0 (disabled) or a finite positive multiple "
                "of stable's p95"
            )
        if self.min_requests < 0 or self.auto_promote_after < 0:
            raise InvalidArgument("min_requests and auto_promote_after must not be negative")


# ---------------------------------------------------------------------- the resource


@dataclass(frozen=True)
class Deployment:
    """The desired state of a model's agents, `models/{model}/deployment`."""

    model: str
    stable: ArtifactRef | None = None
    canary: ArtifactRef | None = None
    canary_weight: int = 0
    revision: int = 0
    policy: CanaryPolicy = field(default_factory=CanaryPolicy)
    updated_by: str = ""
    update_time: datetime | None = None

    @property
    def etag(self) -> str:
        return str(self.revision)

    @property
    def stable_version(self) -> int:
        return self.stable.version if self.stable else 0

    @property
    def canary_version(self) -> int:
        return self.canary.version if self.canary else 0

    def desired(self) -> tuple[ArtifactRef | None, ArtifactRef | None, int]:
        """What agents act on; two deployments that agree on it serve the same."""
        return self.stable, self.canary, self.canary_weight

    def as_dict(self) -> dict[str, Any]:
        """The desired state as stored in history rows and carried by DEPLOYMENT_CHANGED."""
        return {
            "stable": self.stable.as_dict() if self.stable else None,
            "canary": self.canary.as_dict() if self.canary else None,
            "canary_weight": self.canary_weight,
            "revision": self.revision,
            "policy": self.policy.as_dict(),
            "updated_by": self.updated_by,
        }

    @classmethod
    def from_dict(cls, model: str, d: dict[str, Any]) -> Deployment:
        """Reads `as_dict`'s form, and the form rows written before it (version numbers
        and digests only: `stable_version`, `stable_sha256`, `canary_version`, ...)."""
        if "stable" in d or "canary" in d:
            stable = ArtifactRef.from_dict(model, d["stable"]) if d.get("stable") else None
            canary = ArtifactRef.from_dict(model, d["canary"]) if d.get("canary") else None
        else:
            stable = (
                ArtifactRef(model, int(d["stable_version"]), d.get("stable_sha256", ""))
                if d.get("stable_version")
                else None
            )
            canary = (
                ArtifactRef(model, int(d["canary_version"]), d.get("canary_sha256", ""))
                if d.get("canary_version")
                else None
            )
        return cls(
            model=model,
            stable=stable,
            canary=canary,
            canary_weight=int(d.get("canary_weight") or 0),
            revision=int(d.get("revision") or 0),
            policy=CanaryPolicy.from_dict(d.get("policy")),
            updated_by=d.get("updated_by", ""),
        )


class Action(enum.StrEnum):
    PROMOTE = "promote"  # a PromoteModelVersion changed the production version
    SET_CANARY = "set_canary"
    PROMOTE_CANARY = "promote_canary"
    ABORT_CANARY = "abort_canary"
    AUTO_ABORT = "auto_abort"
    AUTO_PROMOTE = "auto_promote"
    ROLLBACK = "rollback"


# ---------------------------------------------------------------------- plans


@dataclass(frozen=True)
class StageMove:
    version: int
    from_stage: Stage
    to_stage: Stage
    sha256: str
    # Set when a production version is archived because `replaced_by` took its place.
    replaced_by: int = 0


@dataclass(frozen=True)
class Plan:
    """The changes of one deployment write, in the order they are applied."""

    model: str
    action: Action
    reason: str
    before: Deployment
    after: Deployment
    moves: tuple[StageMove, ...] = ()

    @property
    def changed(self) -> bool:
        """True when the deployment got a new revision: a history row and DEPLOYMENT_CHANGED."""
        return self.after.revision != self.before.revision

    @property
    def production(self) -> int:
        return self.after.stable_version

    def events(self) -> list[EventDraft]:
        out = []
        for m in self.moves:
            details: dict[str, Any] = {"sha256": m.sha256}
            reason = self.reason
            if m.replaced_by:
                details["replaced_by"] = m.replaced_by
                reason = reason or f"replaced by version {m.replaced_by}"
            out.append(
                EventDraft(
                    "STAGE_CHANGED", self.model, m.version, m.from_stage.value, m.to_stage.value, reason, details
                )
            )
        if self.changed:
            out.append(
                EventDraft(
                    "DEPLOYMENT_CHANGED",
                    self.model,
                    reason=self.reason,
                    details={"action": self.action.value, "deployment": self.after.as_dict()},
                )
            )
        return out


def check_etag(d: Deployment, etag: str) -> None:
    """An empty etag skips the check; a stale one is ABORTED (optimistic concurrency)."""
    if etag and etag != d.etag:
        raise Aborted(
            f"the deployment of models/{d.model} changed since you read it (etag {etag!r}, now {d.etag!r}); "
            f"re-read it with 'modelreg deployment {d.model}' and retry"
        )


def _to_production(before: Deployment, target: VersionInfo) -> list[StageMove]:
    """Moves `target` into production, archiving the version it replaces."""
    check_stage_move(before.model, target.version, target.stage, Stage.PRODUCTION)
    moves = []
    if before.stable and before.stable.version != target.version:
        moves.append(
            StageMove(before.stable.version, Stage.PRODUCTION, Stage.ARCHIVED, before.stable.sha256, target.version)
        )
    moves.append(StageMove(target.version, target.stage, Stage.PRODUCTION, target.ref.sha256))
    return moves


def _with(before: Deployment, actor: str, **changes: Any) -> Deployment:
    after = replace(before, **changes)
    if after.desired() == before.desired():
        return before
    return replace(after, revision=before.revision + 1, updated_by=actor)


def plan_stage_move(before: Deployment, target: VersionInfo, stage: Stage, reason: str, actor: str) -> Plan:
    """PromoteModelVersion: any legal stage move. Entering production archives the previous
    production version; leaving it leaves the model without one. A canary equal to the new
    stable version, or left without a stable version to compare against, is cleared."""
    if stage == Stage.PRODUCTION:
        moves = _to_production(before, target)
        stable: ArtifactRef | None = target.ref
    else:
        check_stage_move(before.model, target.version, target.stage, stage)
        moves = [StageMove(target.version, target.stage, stage, target.ref.sha256)]
        stable = None if target.stage == Stage.PRODUCTION else before.stable
    canary, weight = before.canary, before.canary_weight
    if stable is None or (canary and canary.version == stable.version):
        canary, weight = None, 0
    after = _with(before, actor, stable=stable, canary=canary, canary_weight=weight)
    return Plan(before.model, Action.PROMOTE, reason, before, after, tuple(moves))


def plan_set_canary(before: Deployment, target: VersionInfo, weight: int, reason: str, actor: str) -> Plan:
    if not 0 <= weight <= 100:
        raise InvalidArgument(f"canary weight {weight} is out of range: use a percentage from 0 to 100")
    model = before.model
    if before.stable is None:
        raise FailedPrecondition(
            f"models/{model} has no production version to canary against; "
            f"promote one first ('modelreg promote {model} VERSION production')"
        )
    if target.version == before.stable.version:
        raise FailedPrecondition(
            f"version {target.version} is already the stable (production) version of models/{model}; "
            "choose another version for the canary"
        )
    after = _with(before, actor, canary=target.ref, canary_weight=weight)
    if after is before:  # the same canary at the same weight: still one revision, as before
        after = replace(before, revision=before.revision + 1, updated_by=actor)
    return Plan(model, Action.SET_CANARY, reason, before, after)


def require_canary(d: Deployment, what: str) -> ArtifactRef:
    if d.canary is None:
        raise FailedPrecondition(
            f"models/{d.model} has no canary to {what}; start one with 'modelreg canary {d.model} VERSION --weight W'"
        )
    return d.canary


def plan_promote_canary(
    before: Deployment, canary: VersionInfo, reason: str, actor: str, action: Action = Action.PROMOTE_CANARY
) -> Plan:
    """The canary becomes stable; `canary` is the canary version as loaded (its stage)."""
    require_canary(before, "promote")
    moves = _to_production(before, canary)
    after = _with(before, actor, stable=canary.ref, canary=None, canary_weight=0)
    return Plan(before.model, action, reason, before, after, tuple(moves))


def plan_abort_canary(before: Deployment, reason: str, actor: str, action: Action = Action.ABORT_CANARY) -> Plan:
    require_canary(before, "abort")
    return Plan(before.model, action, reason, before, _with(before, actor, canary=None, canary_weight=0))


def plan_rollback(before: Deployment, target: VersionInfo | None, reason: str, actor: str) -> Plan:
    """Puts `target` (a named version, or the most recent other version that was in
    production) back in production and clears any canary."""
    model = before.model
    if target is None:
        raise FailedPrecondition(
            f"models/{model} has no previous production version in its history; "
            f"name one with 'modelreg rollback {model} --to VERSION'"
        )
    if target.version == before.stable_version and before.canary is None:
        raise FailedPrecondition(f"version {target.version} is already the stable version of models/{model}")
    moves = _to_production(before, target) if target.version != before.stable_version else []
    after = _with(before, actor, stable=target.ref, canary=None, canary_weight=0)
    return Plan(model, Action.ROLLBACK, reason, before, after, tuple(moves))


def verdict_applies(d: Deployment, canary_version: int) -> bool:
    """An automatic verdict applies only to the canary it judged: a canary replaced or
    stopped since (by a caller or another replica's judge) is left alone."""
    return d.canary_version == canary_version


def check_deletable_version(d: Deployment, version: int, stage: Stage) -> None:
    model = d.model
    if stage == Stage.PRODUCTION:
        raise FailedPrecondition(
            f"models/{model}/versions/{version} is in production; promote another version "
            f"or archive it ('modelreg promote {model} {version} archived') before deleting it"
        )
    if d.canary_version == version:
        raise FailedPrecondition(
            f"models/{model}/versions/{version} is the running canary; abort it "
            f"('modelreg canary {model} --abort') before deleting it"
        )


# ---------------------------------------------------------------------- canary verdicts


@dataclass(frozen=True)
class VersionStats:
    """What agents observed for one version, summed over agents."""

    requests: int = 0
    errors: int = 0
    p95_ms: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class Verdict(enum.StrEnum):
    WAIT = "wait"
    ABORT = "abort"
    PROMOTE = "promote"


def judge_canary(policy: CanaryPolicy, stable: VersionStats, canary: VersionStats) -> tuple[Verdict, str]:
    """The policy's verdict on a running canary, with the reason recorded in the history."""
    if not policy.enabled or canary.requests < max(policy.min_requests, 1):
        return Verdict.WAIT, ""
    if policy.max_error_rate and canary.error_rate > policy.max_error_rate:
        return Verdict.ABORT, (
            f"canary error rate {canary.error_rate:.1%} ({canary.errors}/{canary.requests}) "
            f"exceeds the policy's {policy.max_error_rate:.1%}"
        )
    if policy.max_latency_ratio and stable.p95_ms > 0 and canary.p95_ms > policy.max_latency_ratio * stable.p95_ms:
        return Verdict.ABORT, (
            f"canary p95 latency {canary.p95_ms:.1f} ms exceeds {policy.max_latency_ratio:g}x "
            f"stable's {stable.p95_ms:.1f} ms"
        )
    if policy.auto_promote_after and canary.requests >= policy.auto_promote_after:
        return Verdict.PROMOTE, (
            f"canary served {canary.requests} requests within the policy "
            f"(error rate {canary.error_rate:.1%}); promoted automatically"
        )
    return Verdict.WAIT, ""
