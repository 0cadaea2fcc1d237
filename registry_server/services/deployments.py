"""DeploymentService: proto in, domain call, proto out."""

from __future__ import annotations

from modelreg.v1 import deployment_service_pb2 as ds
from modelreg.v1 import deployment_service_pb2_grpc as ds_grpc
from registry_server.domain import deployments as dd
from registry_server.domain.names import validate_model_id
from registry_server.errors import InvalidArgument
from registry_server.registry import Registry
from registry_server.services import convert as cv
from registry_server.services.status import actor_of, grpc_errors
from registry_server.storage.deployments import Deployment, HistoryEntry

ACTION_TO_PROTO = {
    dd.Action.PROMOTE: ds.DEPLOYMENT_ACTION_PROMOTE,
    dd.Action.SET_CANARY: ds.DEPLOYMENT_ACTION_SET_CANARY,
    dd.Action.PROMOTE_CANARY: ds.DEPLOYMENT_ACTION_PROMOTE_CANARY,
    dd.Action.ABORT_CANARY: ds.DEPLOYMENT_ACTION_ABORT_CANARY,
    dd.Action.AUTO_ABORT: ds.DEPLOYMENT_ACTION_AUTO_ABORT,
    dd.Action.AUTO_PROMOTE: ds.DEPLOYMENT_ACTION_AUTO_PROMOTE,
    dd.Action.ROLLBACK: ds.DEPLOYMENT_ACTION_ROLLBACK,
}


def parse_deployment_name(name: str) -> str:
    """`models/{model}/deployment`, `models/{model}` or a bare id -> model id."""
    parts = (name or "").split("/")
    if len(parts) == 3 and parts[0] == "models" and parts[2] == "deployment":
        return validate_model_id(parts[1])
    if len(parts) == 2 and parts[0] == "models":
        return validate_model_id(parts[1])
    if len(parts) == 1 and parts[0]:
        return validate_model_id(parts[0])
    raise InvalidArgument(
        f"invalid name {name!r}: expected 'models/{{model}}/deployment', for example 'models/fraud-detector/deployment'"
    )


def policy_to_proto(p: dd.CanaryPolicy) -> ds.CanaryPolicy:
    return ds.CanaryPolicy(
        max_error_rate=p.max_error_rate,
        max_latency_ratio=p.max_latency_ratio,
        min_requests=p.min_requests,
        auto_promote_after=p.auto_promote_after,
    )


def state_to_proto(s: dd.DeploymentState) -> ds.DeploymentState:
    return ds.DeploymentState(
        stable_version=s.stable_version,
        canary_version=s.canary_version,
        canary_weight=s.canary_weight,
        revision=s.revision,
    )


def deployment_to_proto(d: Deployment) -> ds.Deployment:
    return ds.Deployment(
        name=f"models/{d.model}/deployment",
        stable_version=d.state.stable_version,
        stable_sha256=d.stable_sha256,
        canary_version=d.state.canary_version,
        canary_sha256=d.canary_sha256,
        canary_weight=d.state.canary_weight,
        etag=d.state.etag,
        policy=policy_to_proto(d.policy),
        updated_by=d.updated_by,
        update_time=cv.ts(d.update_time),
    )


def history_to_proto(h: HistoryEntry) -> ds.DeploymentHistoryEntry:
    return ds.DeploymentHistoryEntry(
        action=ACTION_TO_PROTO[dd.Action(h.action)],
        actor=h.actor,
        reason=h.reason,
        before=state_to_proto(h.before),
        after=state_to_proto(h.after),
        create_time=cv.ts(h.create_time),
        sequence=h.sequence,
    )


class DeploymentServicer(ds_grpc.DeploymentServiceServicer):
    def __init__(self, registry: Registry):
        self.deployments = registry.deployments

    @grpc_errors
    async def GetDeployment(self, request, context) -> ds.GetDeploymentResponse:
        d = await self.deployments.get(parse_deployment_name(request.name))
        return ds.GetDeploymentResponse(deployment=deployment_to_proto(d))

    @grpc_errors
    async def SetCanary(self, request, context) -> ds.SetCanaryResponse:
        model = parse_deployment_name(request.name)
        if request.version < 1:
            raise InvalidArgument("'version' is required: the version number to run as the canary")
        d, seq = await self.deployments.change(
            model,
            dd.Action.SET_CANARY,
            actor_of(context),
            request.reason,
            request.etag,
            version=request.version,
            weight=request.weight,
        )
        return ds.SetCanaryResponse(deployment=deployment_to_proto(d), sequence=seq)

    @grpc_errors
    async def PromoteCanary(self, request, context) -> ds.PromoteCanaryResponse:
        d, seq = await self.deployments.change(
            parse_deployment_name(request.name), dd.Action.PROMOTE_CANARY, actor_of(context), request.reason, request.etag
        )
        return ds.PromoteCanaryResponse(deployment=deployment_to_proto(d), sequence=seq)

    @grpc_errors
    async def AbortCanary(self, request, context) -> ds.AbortCanaryResponse:
        d, seq = await self.deployments.change(
            parse_deployment_name(request.name), dd.Action.ABORT_CANARY, actor_of(context), request.reason, request.etag
        )
        return ds.AbortCanaryResponse(deployment=deployment_to_proto(d), sequence=seq)

    @grpc_errors
    async def Rollback(self, request, context) -> ds.RollbackResponse:
        if request.to_version < 0:
            raise InvalidArgument("to_version must be a version number, or 0 for the previous production version")
        d, seq = await self.deployments.change(
            parse_deployment_name(request.name),
            dd.Action.ROLLBACK,
            actor_of(context),
            request.reason,
            request.etag,
            version=request.to_version,
        )
        return ds.RollbackResponse(deployment=deployment_to_proto(d), sequence=seq)

    @grpc_errors
    async def SetCanaryPolicy(self, request, context) -> ds.SetCanaryPolicyResponse:
        p = request.policy
        policy = dd.CanaryPolicy(
            max_error_rate=p.max_error_rate,
            max_latency_ratio=p.max_latency_ratio,
            min_requests=p.min_requests if p.min_requests else 100,
            auto_promote_after=p.auto_promote_after,
        )
        d = await self.deployments.set_policy(parse_deployment_name(request.name), policy, actor_of(context))
        return ds.SetCanaryPolicyResponse(deployment=deployment_to_proto(d))

    @grpc_errors
    async def ListDeploymentHistory(self, request, context) -> ds.ListDeploymentHistoryResponse:
        model = parse_deployment_name(request.name)
        size = cv.page_size(request.page_size)
        before = cv.decode_int_token("deployhist", request.page_token, 2**62)
        rows = await self.deployments.history(model, before, size + 1)
        token = cv.encode_token("deployhist", rows[size - 1].id) if len(rows) > size else ""
        return ds.ListDeploymentHistoryResponse(
            entries=[history_to_proto(h) for h in rows[:size]], next_page_token=token
        )
