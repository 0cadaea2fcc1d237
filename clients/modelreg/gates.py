"""SDK methods for promotion governance: gate policies, CheckGates (for CI), promotion
requests and their approval or rejection. Mixed into `modelreg.Client`.

    reg.set_gate_policy("detector", "production", min={"map50": 0.6}, max_drop={"map50": 0.02})
    ev = reg.check_gates("detector", 7)           # GateEvaluation: passed, one result per check
    resp = reg.promote("detector", 7, "production")
    if resp.HasField("promotion_request"):        # the policy needs approvals: nothing moved yet
        ...                                       # another releaser calls reg.approve("detector", 7)

A promotion a gate refuses raises `modelreg.errors.FailedPrecondition`, whose `violations`
list one (type, subject, description) per failing check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import grpc

from modelreg import errors
from modelreg.v1 import governance_pb2 as gv
from modelreg.v1 import governance_service_pb2 as gs
from modelreg.v1 import governance_service_pb2_grpc as gs_grpc

#: Check kinds as the CLI and CheckResult.type spell them.
CHECK_TYPES: dict[str, gv.GateCheckType.ValueType] = {
    "min": gv.GATE_CHECK_TYPE_MIN,
    "max": gv.GATE_CHECK_TYPE_MAX,
    "max-drop": gv.GATE_CHECK_TYPE_MAX_DROP,
    "max-rise": gv.GATE_CHECK_TYPE_MAX_RISE,
    "require-card": gv.GATE_CHECK_TYPE_REQUIRE_CARD,
    "approvals": gv.GATE_CHECK_TYPE_APPROVALS,
    "same-signature": gv.GATE_CHECK_TYPE_SAME_SIGNATURE,
}
CHECK_NAMES = {v: k for k, v in CHECK_TYPES.items()}
REQUEST_STATES: dict[str, gv.PromotionRequestState.ValueType] = {
    "pending": gv.PROMOTION_REQUEST_STATE_PENDING,
    "approved": gv.PROMOTION_REQUEST_STATE_APPROVED,
    "rejected": gv.PROMOTION_REQUEST_STATE_REJECTED,
    "expired": gv.PROMOTION_REQUEST_STATE_EXPIRED,
    "superseded": gv.PROMOTION_REQUEST_STATE_SUPERSEDED,
}
STATE_NAMES = {v: k for k, v in REQUEST_STATES.items()}


def _model(model: str) -> str:
    return model if model.startswith("models/") else f"models/{model}"


def _version(model: str, version: int | str) -> str:
    return f"{_model(model)}/versions/{version}"


def state_enum(state: str | int) -> gv.PromotionRequestState.ValueType:
    """`pending` (or the enum) to PromotionRequestState; '' to unspecified (every state)."""
    if isinstance(state, int):
        return gv.PromotionRequestState.ValueType(state)
    key = state.strip().lower().removeprefix("promotion_request_state_")
    if not key:
        return gv.PROMOTION_REQUEST_STATE_UNSPECIFIED
    if key not in REQUEST_STATES:
        raise errors.InvalidArgument(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unknown request state {state!r}: use {', '.join(REQUEST_STATES)}",
        )
    return REQUEST_STATES[key]


def build_policy(
    stage: str,
    *,
    min: Mapping[str, float] | None = None,  # noqa: A002 - the check's name
    max: Mapping[str, float] | None = None,  # noqa: A002 - the check's name
    max_drop: Mapping[str, float] | None = None,
    max_rise: Mapping[str, float] | None = None,
    require_card: bool = False,
    approvals: int = 0,
    rollback_skips_metrics: bool = True,
    same_signature: bool = False,
) -> gv.GatePolicy:
    """A GatePolicy whose checks come in this order: min, max, max-drop, max-rise (each in
    the mapping's order), require-card, approvals, same-signature. `approvals` 0 adds no
    approvals check."""
    policy = gv.GatePolicy(target=stage, rollback_skips_metrics=rollback_skips_metrics)
    for kind, bounds in (
        (gv.GATE_CHECK_TYPE_MIN, min),
        (gv.GATE_CHECK_TYPE_MAX, max),
        (gv.GATE_CHECK_TYPE_MAX_DROP, max_drop),
        (gv.GATE_CHECK_TYPE_MAX_RISE, max_rise),
    ):
        for metric, value in (bounds or {}).items():
            policy.checks.add(type=kind, metric=metric, value=float(value))
    if require_card:
        policy.checks.add(type=gv.GATE_CHECK_TYPE_REQUIRE_CARD)
    if approvals:
        policy.checks.add(type=gv.GATE_CHECK_TYPE_APPROVALS, value=float(approvals))
    if same_signature:
        policy.checks.add(type=gv.GATE_CHECK_TYPE_SAME_SIGNATURE)
    return policy


def describe_check(check: gv.GateCheck) -> str:
    """`min map50=0.6`, `max-drop map50=0.02`, `require-card`, `approvals 2`."""
    name = CHECK_NAMES.get(check.type, "?")
    if check.type == gv.GATE_CHECK_TYPE_APPROVALS:
        return f"approvals {int(check.value)}"
    if check.type in (gv.GATE_CHECK_TYPE_REQUIRE_CARD, gv.GATE_CHECK_TYPE_SAME_SIGNATURE):
        return name
    return f"{name} {check.metric}={check.value:.6g}"


class GateMixin:
    """Needs `self._channel`, `self._call` and `self._pages` from `Client`."""

    if TYPE_CHECKING:
        _channel: grpc.Channel
        _call: Callable[..., Any]
        _pages: Callable[..., Iterator[Any]]

    @cached_property
    def _gates_stub(self) -> gs_grpc.GovernanceServiceStub:
        return gs_grpc.GovernanceServiceStub(self._channel)

    def set_gate_policy(
        self,
        model: str,
        stage: str,
        *,
        min: Mapping[str, float] | None = None,  # noqa: A002 - the check's name
        max: Mapping[str, float] | None = None,  # noqa: A002 - the check's name
        max_drop: Mapping[str, float] | None = None,
        max_rise: Mapping[str, float] | None = None,
        require_card: bool = False,
        approvals: int = 0,
        rollback_skips_metrics: bool = True,
        same_signature: bool = False,
    ) -> gv.GatePolicy:
        """Replaces the gate policy of `stage` (`production`, `staging` or an alias) with
        these checks (`build_policy` gives their order); returns the stored policy.
        `approvals` needs auth on (FAILED_PRECONDITION otherwise). `same_signature`: the
        version's inputs must match the production version's."""
        policy = build_policy(
            stage,
            min=min,
            max=max,
            max_drop=max_drop,
            max_rise=max_rise,
            require_card=require_card,
            approvals=approvals,
            rollback_skips_metrics=rollback_skips_metrics,
            same_signature=same_signature,
        )
        req = gs.SetGatePolicyRequest(model=_model(model), policy=policy)
        return self._call(self._gates_stub.SetGatePolicy, req).policy

    def get_gate_policies(self, model: str, stage: str = "") -> list[gv.GatePolicy]:
        """The model's policies by target; only `stage`'s (zero or one) when given."""
        req = gs.GetGatePoliciesRequest(model=_model(model), target=stage)
        return list(self._call(self._gates_stub.GetGatePolicies, req).policies)

    def clear_gate_policy(self, model: str, stage: str) -> bool:
        """Removes `stage`'s policy; False when it had none."""
        req = gs.ClearGatePolicyRequest(model=_model(model), target=stage)
        return self._call(self._gates_stub.ClearGatePolicy, req).removed

    def check_gates(self, model: str, version: int | str, stage: str = "production") -> gv.GateEvaluation:
        """Evaluates a version (number, stage or alias) against `stage`'s policy without
        moving anything: `passed`, and one CheckResult per check (passed with no policy)."""
        req = gs.CheckGatesRequest(model_version=_version(model, version), target=stage)
        return self._call(self._gates_stub.CheckGates, req).evaluation

    def list_promotion_requests(
        self, model: str = "", state: str | int = "", *, page_size: int = 0
    ) -> Iterator[gv.PromotionRequest]:
        """Promotion requests, newest first, every page (of one model and one state when given:
        pending, approved, rejected, expired, superseded)."""
        req = gs.ListPromotionRequestsRequest(
            model=_model(model) if model else "", state=state_enum(state), page_size=page_size
        )
        return self._pages(self._gates_stub.ListPromotionRequests, req, "requests")

    def approve(
        self, model: str, version: int, stage: str = "production", reason: str = ""
    ) -> gs.ApprovePromotionResponse:
        """Approves the pending request for (model, version, stage). The approval that
        completes it promotes the version (`model_version` is then set). Needs the releaser
        or project-admin role; the requester cannot approve its own request."""
        req = gs.ApprovePromotionRequest(model_version=_version(model, version), target=stage, reason=reason)
        return self._call(self._gates_stub.ApprovePromotion, req)

    def reject(self, model: str, version: int, stage: str, reason: str) -> gs.RejectPromotionResponse:
        """Rejects the pending request for (model, version, stage), closing it; `reason` is
        required."""
        req = gs.RejectPromotionRequest(model_version=_version(model, version), target=stage, reason=reason)
        return self._call(self._gates_stub.RejectPromotion, req)
