"""GovernanceService's gate and approval RPCs: proto in, use case, proto out."""

from __future__ import annotations

from datetime import UTC, datetime

from modelreg.v1 import governance_pb2 as gv
from modelreg.v1 import governance_service_pb2 as gs
from registry_server.domain.gates import Check, CheckType, Evaluation, GatePolicy
from registry_server.domain.names import parse_model_name, parse_version_name, version_name
from registry_server.errors import InvalidArgument
from registry_server.services import convert as cv
from registry_server.services.auth import caller_of
from registry_server.storage.gates import Request, StoredPolicy
from registry_server.usecases.gates import Gates
from registry_server.usecases.models import Models

CHECK_FROM_PROTO = {
    gv.GATE_CHECK_TYPE_MIN: CheckType.MIN,
    gv.GATE_CHECK_TYPE_MAX: CheckType.MAX,
    gv.GATE_CHECK_TYPE_MAX_DROP: CheckType.MAX_DROP,
    gv.GATE_CHECK_TYPE_MAX_RISE: CheckType.MAX_RISE,
    gv.GATE_CHECK_TYPE_REQUIRE_CARD: CheckType.REQUIRE_CARD,
    gv.GATE_CHECK_TYPE_APPROVALS: CheckType.APPROVALS,
    gv.GATE_CHECK_TYPE_SAME_SIGNATURE: CheckType.SAME_SIGNATURE,
}
CHECK_TO_PROTO = {v: k for k, v in CHECK_FROM_PROTO.items()}
STATE_TO_PROTO = {
    "pending": gv.PROMOTION_REQUEST_STATE_PENDING,
    "approved": gv.PROMOTION_REQUEST_STATE_APPROVED,
    "rejected": gv.PROMOTION_REQUEST_STATE_REJECTED,
    "expired": gv.PROMOTION_REQUEST_STATE_EXPIRED,
    "superseded": gv.PROMOTION_REQUEST_STATE_SUPERSEDED,
}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}


def policy_from_proto(p: gv.GatePolicy) -> GatePolicy:
    checks = []
    for i, c in enumerate(p.checks):
        kind = CHECK_FROM_PROTO.get(c.type)
        if kind is None:
            raise InvalidArgument(
                f"policy.checks[{i}].type is unset or unknown; use GATE_CHECK_TYPE_MIN, _MAX, _MAX_DROP, _MAX_RISE, "
                "_REQUIRE_CARD, _APPROVALS or _SAME_SIGNATURE"
            )
        checks.append(Check(kind, c.metric, c.value))
    skips = p.rollback_skips_metrics if p.HasField("rollback_skips_metrics") else True
    return GatePolicy(p.target, tuple(checks), skips)


def stored_policy_to_proto(s: StoredPolicy) -> gv.GatePolicy:
    p = s.policy
    return gv.GatePolicy(
        name=f"models/{s.model}/gates/{p.target}",
        target=p.target,
        checks=[gv.GateCheck(type=CHECK_TO_PROTO[c.type], metric=c.metric, value=c.value) for c in p.checks],
        rollback_skips_metrics=p.rollback_skips_metrics,
        update_time=cv.ts(s.updated_at),
        updated_by=s.updated_by,
    )


def evaluation_to_proto(ev: Evaluation, target: str) -> gv.GateEvaluation:
    return gv.GateEvaluation(
        model_version=version_name(ev.model, ev.version),
        target=ev.target or target,
        passed=ev.passed,
        checks=[
            gv.CheckResult(
                type=r.type.value,
                subject=r.subject,
                passed=r.passed,
                required=r.required,
                actual=r.actual,
                description=r.description,
            )
            for r in ev.results
        ],
    )


def request_to_proto(r: Request) -> gv.PromotionRequest:
    return gv.PromotionRequest(
        name=f"models/{r.model}/promotionRequests/{r.id}",
        model_version=version_name(r.model, r.version),
        target=r.target,
        state=STATE_TO_PROTO[r.effective_state(datetime.now(UTC))],
        requester=r.requester,
        reason=r.reason,
        required_approvals=r.required,
        approvals=[
            gv.Approval(principal=a.principal, approved=a.approved, reason=a.reason, create_time=cv.ts(a.created_at))
            for a in r.approvals
        ],
        create_time=cv.ts(r.created_at),
        expire_time=cv.ts(r.expires_at),
        close_time=cv.ts(r.closed_at),
    )


class GateRpcs:
    gates: Gates
    models: Models

    async def SetGatePolicy(self, request, context) -> gs.SetGatePolicyResponse:
        model = parse_model_name(request.model, "model")
        stored = await self.gates.set_policy(caller_of(context), model, policy_from_proto(request.policy))
        return gs.SetGatePolicyResponse(policy=stored_policy_to_proto(stored))

    async def GetGatePolicies(self, request, context) -> gs.GetGatePoliciesResponse:
        model = parse_model_name(request.model, "model")
        stored = await self.gates.policies(caller_of(context), model, request.target)
        return gs.GetGatePoliciesResponse(policies=[stored_policy_to_proto(s) for s in stored])

    async def ClearGatePolicy(self, request, context) -> gs.ClearGatePolicyResponse:
        model = parse_model_name(request.model, "model")
        return gs.ClearGatePolicyResponse(
            removed=await self.gates.clear_policy(caller_of(context), model, request.target)
        )

    async def CheckGates(self, request, context) -> gs.CheckGatesResponse:
        ref = parse_version_name(request.model_version, "model_version")
        target = request.target or "production"
        ev = await self.gates.check(caller_of(context), ref, target, self.models.version_of)
        return gs.CheckGatesResponse(evaluation=evaluation_to_proto(ev, target))

    async def ListPromotionRequests(self, request, context) -> gs.ListPromotionRequestsResponse:
        model = parse_model_name(request.model, "model") if request.model else ""
        state = STATE_FROM_PROTO.get(request.state, "") if request.state else ""
        size = cv.page_size(request.page_size)
        before = cv.decode_int_token("requests", request.page_token, 2**62)
        rows = await self.gates.list_requests(caller_of(context), model, state, before, size + 1)
        token = cv.encode_token("requests", rows[size - 1].id) if len(rows) > size else ""
        return gs.ListPromotionRequestsResponse(
            requests=[request_to_proto(r) for r in rows[:size]], next_page_token=token
        )

    async def _decide(self, request, context, approve: bool):
        ref = parse_version_name(request.model_version, "model_version")
        if ref.number is None:
            raise InvalidArgument("name the version by number: 'models/{model}/versions/{n}'")
        return await self.gates.decide(
            caller_of(context), ref.model, ref.number, request.target or "production", request.reason, approve=approve
        )

    async def ApprovePromotion(self, request, context) -> gs.ApprovePromotionResponse:
        req, version, _ = await self._decide(request, context, True)
        return gs.ApprovePromotionResponse(
            request=request_to_proto(req), model_version=cv.version_to_proto(version) if version else None
        )

    async def RejectPromotion(self, request, context) -> gs.RejectPromotionResponse:
        req, _, _ = await self._decide(request, context, False)
        return gs.RejectPromotionResponse(request=request_to_proto(req))
