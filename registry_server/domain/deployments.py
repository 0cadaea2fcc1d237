"""Deployment rules: what agents should serve for a model (stable, canary, weight), how it
may change, and the canary policy's verdict. Pure functions, no I/O.

The stable version IS the model's production version. A canary is another READY version
that agents load beside it and route `weight` percent of requests to.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, replace
from typing import Any

from registry_server.errors import Aborted, FailedPrecondition, InvalidArgument


@dataclass(frozen=True)
class DeploymentState:
    stable_version: int = 0
    canary_version: int = 0
    canary_weight: int = 0
    revision: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def etag(self) -> str:
        return str(self.revision)


class Action(str, enum.Enum):
    PROMOTE = "promote"  # a PromoteModelVersion changed the production version
    SET_CANARY = "set_canary"
    PROMOTE_CANARY = "promote_canary"
    ABORT_CANARY = "abort_canary"
    AUTO_ABORT = "auto_abort"
    AUTO_PROMOTE = "auto_promote"
    ROLLBACK = "rollback"


def check_etag(model: str, state: DeploymentState, etag: str) -> None:
    """An empty etag skips the check; a stale one is ABORTED (optimistic concurrency)."""
    if etag and etag != state.etag:
        raise Aborted(
            f"the deployment of models/{model} changed since you read it (etag {etag!r}, now {state.etag!r}); "
            f"re-read it with 'modelreg deployment {model}' and retry"
        )


def set_canary(model: str, state: DeploymentState, version: int, weight: int) -> DeploymentState:
    if not 0 <= weight <= 100:
        raise InvalidArgument(f"canary weight {weight} is out of range: use a percentage from 0 to 100")
    if not state.stable_version:
        raise FailedPrecondition(
            f"models/{model} has no production version to canary against; "
            f"promote one first ('modelreg promote {model} VERSION production')"
        )
    if version == state.stable_version:
        raise FailedPrecondition(
            f"version {version} is already the stable (production) version of models/{model}; "
            "choose another version for the canary"
        )
    return replace(state, canary_version=version, canary_weight=weight, revision=state.revision + 1)


def require_canary(model: str, state: DeploymentState, what: str) -> None:
    if not state.canary_version:
        raise FailedPrecondition(
            f"models/{model} has no canary to {what}; start one with 'modelreg canary {model} VERSION --weight W'"
        )


def promote_canary(model: str, state: DeploymentState) -> DeploymentState:
    require_canary(model, state, "promote")
    return DeploymentState(stable_version=state.canary_version, revision=state.revision + 1)


def abort_canary(model: str, state: DeploymentState) -> DeploymentState:
    require_canary(model, state, "abort")
    return replace(state, canary_version=0, canary_weight=0, revision=state.revision + 1)


def rollback(model: str, state: DeploymentState, target: int) -> DeploymentState:
    if not target:
        raise FailedPrecondition(
            f"models/{model} has no previous production version in its history; "
            f"name one with 'modelreg rollback {model} --to VERSION'"
        )
    if target == state.stable_version and not state.canary_version:
        raise FailedPrecondition(f"version {target} is already the stable version of models/{model}")
    return DeploymentState(stable_version=target, revision=state.revision + 1)


def after_stage_change(state: DeploymentState, production: int) -> DeploymentState:
    """The state after a plain stage move set the production version to `production` (0
    when none). A canary equal to the new stable version, or left without a stable to
    compare against, is cleared."""
    canary, weight = state.canary_version, state.canary_weight
    if canary == production or not production:
        canary, weight = 0, 0
    new = DeploymentState(production, canary, weight, state.revision)
    return replace(new, revision=state.revision + 1) if new != state else state


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
        if self.max_latency_ratio < 0:
            raise InvalidArgument("max_latency_ratio must be 0 (disabled) or a positive multiple of stable's p95")
        if self.min_requests < 0 or self.auto_promote_after < 0:
            raise InvalidArgument("min_requests and auto_promote_after must not be negative")


@dataclass(frozen=True)
class VersionStats:
    """What agents observed for one version, summed over agents."""

    requests: int = 0
    errors: int = 0
    p95_ms: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class Verdict(str, enum.Enum):
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
