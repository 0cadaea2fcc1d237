"""Promotion gates as pure rules: a policy per model and target, and its evaluation against
a version, the version that holds the target now, its model card and its approvals.

A target is a stage (`production`, `staging`) or a named alias. Every path into a target
(promote, canary start, canary promote, rollback, the canary judge, moving a protected
alias) is evaluated by `evaluate`, in the use-case layer, so every front end obeys the
same rules. Messages are for people; `Result` carries the machine-readable parts (type,
subject = metric, required, actual) that become a google.rpc.PreconditionFailure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from registry_server.domain.signatures import Signature, input_changes
from registry_server.errors import FailedPrecondition, InvalidArgument

STAGE_TARGETS = ("production", "staging")
MAX_CHECKS = 100


class CheckType(StrEnum):
    MIN = "min"
    MAX = "max"
    MAX_DROP = "max-drop"
    MAX_RISE = "max-rise"
    REQUIRE_CARD = "require-card"
    APPROVALS = "approvals"
    SAME_SIGNATURE = "same-signature"


METRIC_CHECKS = (CheckType.MIN, CheckType.MAX, CheckType.MAX_DROP, CheckType.MAX_RISE)


@dataclass(frozen=True)
class Check:
    type: CheckType
    metric: str = ""
    value: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type.value, "metric": self.metric, "value": self.value}


@dataclass(frozen=True)
class GatePolicy:
    target: str
    checks: tuple[Check, ...] = ()
    rollback_skips_metrics: bool = True

    @property
    def approvals(self) -> int:
        return max((int(c.value) for c in self.checks if c.type == CheckType.APPROVALS), default=0)

    def validate(self, auth_enabled: bool) -> None:
        """INVALID_ARGUMENT for a malformed check; FAILED_PRECONDITION for approvals with
        auth off (an approval means something only when the approver is authenticated)."""
        if len(self.checks) > MAX_CHECKS:
            raise InvalidArgument(f"a policy holds at most {MAX_CHECKS} checks; this one has {len(self.checks)}")
        for i, c in enumerate(self.checks):
            where = f"policy.checks[{i}] ({c.type.value})"
            if not math.isfinite(c.value):
                # Every check's value is stored as JSON (no NaN or Infinity), even one that
                # ignores it (require-card); approvals counts with it.
                raise InvalidArgument(f"{where}: the value must be a finite number, not {c.value}")
            if c.type in METRIC_CHECKS:
                if not c.metric:
                    raise InvalidArgument(f"{where} needs a metric: e.g. {c.type.value} map50=0.6")
                if c.type in (CheckType.MAX_DROP, CheckType.MAX_RISE) and c.value < 0:
                    raise InvalidArgument(f"{where}: the allowed change must be 0 or more, not {c.value:g}")
            elif c.metric:
                raise InvalidArgument(f"{where} takes no metric")
            if c.type == CheckType.APPROVALS:
                if c.value != int(c.value) or not 1 <= c.value <= 10:
                    raise InvalidArgument(f"{where}: the number of approvals must be a whole number from 1 to 10")
                if not auth_enabled:
                    raise FailedPrecondition(
                        "an 'approvals' check needs auth on: with auth off anyone can approve as anyone, so four "
                        "eyes would mean nothing; start the server with --auth on, or leave approvals out"
                    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "checks": [c.as_dict() for c in self.checks],
            "rollback_skips_metrics": self.rollback_skips_metrics,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GatePolicy:
        return cls(
            target=d["target"],
            checks=tuple(
                Check(CheckType(c["type"]), c.get("metric", ""), float(c.get("value", 0))) for c in d["checks"]
            ),
            rollback_skips_metrics=bool(d.get("rollback_skips_metrics", True)),
        )


@dataclass(frozen=True)
class Holder:
    """The version that holds the target now (what change checks compare against)."""

    version: int
    metrics: dict[str, float]
    signature: Signature | None = None


@dataclass(frozen=True)
class Candidate:
    model: str
    version: int
    metrics: dict[str, float]
    card_status: str | None = None  # None: no card
    approvals: int = 0  # distinct approvers other than the requester, so far
    once_held_target: bool = False  # for a rollback's metric skip
    signature: Signature | None = None  # None: unknown
    # The version in production other than this one (what same-signature compares with).
    production: Holder | None = None


@dataclass(frozen=True)
class Result:
    type: CheckType
    subject: str
    passed: bool
    required: str
    actual: str
    description: str


@dataclass(frozen=True)
class Evaluation:
    model: str
    version: int
    target: str
    results: list[Result] = field(default_factory=list)
    policy: GatePolicy | None = None  # what was evaluated; None: no policy applies

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failing(self, *, ignore: tuple[CheckType, ...] = ()) -> list[Result]:
        return [r for r in self.results if not r.passed and r.type not in ignore]

    @property
    def only_approvals_missing(self) -> bool:
        failing = self.failing()
        return bool(failing) and all(r.type == CheckType.APPROVALS for r in failing)


def num(x: float) -> str:
    """A metric as people write it: 0.612, 12, 1e-05."""
    return f"{x:.6g}"


def evaluate(policy: GatePolicy | None, c: Candidate, holder: Holder | None, *, rollback: bool = False) -> Evaluation:
    """Every check of `policy` against `c`; an empty evaluation (passed) without a policy."""
    ev = Evaluation(c.model, c.version, policy.target if policy else "", policy=policy)
    if policy is None:
        return ev
    target = policy.target
    skip_metrics = rollback and policy.rollback_skips_metrics and c.once_held_target
    where = f"{target} v{holder.version}" if holder else target
    for check in policy.checks:
        t, m, bound = check.type, check.metric, check.value
        if t in METRIC_CHECKS and skip_metrics:
            ev.results.append(
                Result(
                    t,
                    m,
                    True,
                    _required(check, holder),
                    "skipped",
                    f"v{c.version} held {target} before: a rollback "
                    f"to it skips the {t.value} {m} check (rollback_skips_metrics)",
                )
            )
            continue
        if t in METRIC_CHECKS and m not in c.metrics:
            ev.results.append(
                Result(
                    t,
                    m,
                    False,
                    _required(check, holder),
                    "missing",
                    f"metric {m} is missing from v{c.version}; the policy needs it ({t.value} {num(bound)})",
                )
            )
            continue
        value = c.metrics.get(m, 0.0)
        if t == CheckType.MIN:
            ok = value >= bound
            text = f"{m} {num(value)} is {'at least' if ok else 'below'} the minimum {num(bound)}"
        elif t == CheckType.MAX:
            ok = value <= bound
            text = f"{m} {num(value)} is {'at most' if ok else 'above'} the maximum {num(bound)}"
        elif t in (CheckType.MAX_DROP, CheckType.MAX_RISE):
            drop = t == CheckType.MAX_DROP
            if holder is None:
                ev.results.append(
                    Result(
                        t,
                        m,
                        True,
                        _required(check, holder),
                        num(value),
                        f"no version is in {target} yet: nothing to compare {m} against, so the {t.value} check passes",
                    )
                )
                continue
            if m not in holder.metrics:
                ev.results.append(
                    Result(
                        t,
                        m,
                        True,
                        _required(check, holder),
                        num(value),
                        f"{where} has no {m}: nothing to compare against, so the {t.value} check passes",
                    )
                )
                continue
            before = holder.metrics[m]
            change = before - value if drop else value - before
            ok = change <= bound + 1e-12
            word, direction = ("drop", "below") if drop else ("rise", "above")
            if change > 0:
                text = (
                    f"{m} {num(value)} is {direction} {where}'s {num(before)} by {num(change)}; the policy allows "
                    f"a {word} of at most {num(bound)}"
                )
            else:
                text = f"{m} {num(value)} is not {direction} {where}'s {num(before)}"
        elif t == CheckType.REQUIRE_CARD:
            ok = c.card_status == "approved"
            state = "has no model card" if c.card_status is None else f"has a {c.card_status} model card"
            text = (
                f"v{c.version} {state}; the policy requires an approved card"
                if not ok
                else (f"v{c.version}'s model card is approved")
            )
            ev.results.append(Result(t, "", ok, "approved", c.card_status or "none", text))
            continue
        elif t == CheckType.SAME_SIGNATURE:
            ev.results.append(_same_signature(c))
            continue
        else:  # APPROVALS
            need = int(bound)
            ok = c.approvals >= need
            text = f"{c.approvals} of {need} approvals from principals other than the requester" + (
                "" if ok else f"; {need - c.approvals} more needed"
            )
            ev.results.append(Result(t, "", ok, str(need), str(c.approvals), text))
            continue
        ev.results.append(Result(t, m, ok, _required(check, holder), num(value), text))
    return ev


def _same_signature(c: Candidate) -> Result:
    """The candidate's inputs against production's (see domain/signatures.py for when two
    inputs match). Nothing to compare passes; an unknown candidate signature fails."""
    t, prod = CheckType.SAME_SIGNATURE, c.production
    if prod is None:
        return Result(
            t,
            "",
            True,
            "inputs of production",
            "-",
            "no other version is in production: nothing to compare the inputs against, so the same-signature "
            "check passes",
        )
    required = f"inputs of production v{prod.version}"
    if prod.signature is None:
        return Result(
            t,
            "",
            True,
            required,
            "-",
            f"production v{prod.version} has no signature: nothing to compare the inputs against, so the "
            "same-signature check passes",
        )
    if c.signature is None:
        return Result(
            t,
            "",
            False,
            required,
            "unknown",
            f"v{c.version} has no signature, so its inputs cannot be compared with production v{prod.version}'s "
            "(an ONNX version gets one at registration, a YOLO .pt when an agent first loads it)",
        )
    changed = input_changes(prod.signature, c.signature)
    if changed:
        return Result(
            t,
            "",
            False,
            required,
            "differs",
            f"v{c.version}'s inputs differ from production v{prod.version}'s: {'; '.join(changed)}",
        )
    return Result(t, "", True, required, "same", f"v{c.version}'s inputs match production v{prod.version}'s")


def _required(check: Check, holder: Holder | None) -> str:
    t, b = check.type, num(check.value)
    if t == CheckType.MIN:
        return f">= {b}"
    if t == CheckType.MAX:
        return f"<= {b}"
    base = f" from v{holder.version}" if holder else ""
    return f"{'drop' if t == CheckType.MAX_DROP else 'rise'} <= {b}{base}"


class GateFailed(FailedPrecondition):
    """A promotion the target's policy refuses; `results` are the failing checks."""

    def __init__(self, ev: Evaluation, failing: list[Result], action: str = "enter"):
        self.results = failing
        checks = "; ".join(r.description for r in failing)
        super().__init__(
            f"models/{ev.model}/versions/{ev.version} cannot {action} {ev.target}: {checks} "
            f"(see 'modelreg gates check {ev.model} {ev.version} --stage {ev.target}')",
            reason="GATE_FAILED",
        )


def parse_check(spec: str, kind: CheckType) -> Check:
    """`map50=0.6` for a metric check."""
    metric, sep, raw = spec.partition("=")
    if not sep or not metric.strip():
        raise InvalidArgument(f"invalid {kind.value} check {spec!r}: write METRIC=VALUE, e.g. map50=0.6")
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument(f"invalid {kind.value} check {spec!r}: {raw!r} is not a number") from None
    return Check(kind, metric.strip(), value)
