"""DeploymentService: proto in, use case, proto out."""

from __future__ import annotations

from modelreg.v1 import deployment_service_pb2 as ds
from modelreg.v1 import deployment_service_pb2_grpc as ds_grpc
from registry_server.domain import deployments as dd
from registry_server.domain.names import validate_model_id
from registry_server.errors import InvalidArgument
from registry_server.services import convert as cv
from registry_server.services.auth import caller_of
from registry_server.storage.deployments import HistoryEntry
from registry_server.usecases.deployments import Deployments

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


def history_to_proto(h: HistoryEntry) -> ds.DeploymentHistoryEntry:
    return ds.DeploymentHistoryEntry(
        action=ACTION_TO_PROTO[h.action],
        actor=h.actor,
        reason=h.reason,
        before=cv.deployment_to_proto(h.before, with_policy=False),
        after=cv.deployment_to_proto(h.after, with_policy=False),
        create_time=cv.ts(h.create_time),
        sequence=h.sequence,
        token_name=h.token_name,
        on_behalf_of=h.on_behalf_of,
    )


class DeploymentServicer(ds_grpc.DeploymentServiceServicer):
    def __init__(self, deployments: Deployments):
        self.deployments = deployments

    async def GetDeployment(self, request, context) -> ds.GetDeploymentResponse:
        d = await self.deployments.get(caller_of(context), parse_deployment_name(request.name))
        return ds.GetDeploymentResponse(deployment=cv.deployment_to_proto(d))

    async def SetCanary(self, request, context) -> ds.SetCanaryResponse:
        model = parse_deployment_name(request.name)
        if request.version < 1:
            raise InvalidArgument("'version' is required: the version number to run as the canary")
        d, seq = await self.deployments.set_canary(
            caller_of(context), model, request.version, request.weight, request.reason, request.etag
        )
        return ds.SetCanaryResponse(deployment=cv.deployment_to_proto(d), sequence=seq)

    async def PromoteCanary(self, request, context) -> ds.PromoteCanaryResponse:
        d, seq = await self.deployments.promote_canary(
            caller_of(context), parse_deployment_name(request.name), request.reason, request.etag
        )
        return ds.PromoteCanaryResponse(deployment=cv.deployment_to_proto(d), sequence=seq)

    async def AbortCanary(self, request, context) -> ds.AbortCanaryResponse:
        d, seq = await self.deployments.abort_canary(
            caller_of(context), parse_deployment_name(request.name), request.reason, request.etag
        )
        return ds.AbortCanaryResponse(deployment=cv.deployment_to_proto(d), sequence=seq)

    async def Rollback(self, request, context) -> ds.RollbackResponse:
        if request.to_version < 0:
            raise InvalidArgument("to_version must be a version number, or 0 for the previous production version")
        d, seq = await self.deployments.rollback(
            caller_of(context), parse_deployment_name(request.name), request.to_version, request.reason, request.etag
        )
        return ds.RollbackResponse(deployment=cv.deployment_to_proto(d), sequence=seq)

    async def SetCanaryPolicy(self, request, context) -> ds.SetCanaryPolicyResponse:
        d = await self.deployments.set_policy(
            caller_of(context), parse_deployment_name(request.name), cv.policy_from_proto(request.policy)
        )
        return ds.SetCanaryPolicyResponse(deployment=cv.deployment_to_proto(d))

    async def ListDeploymentHistory(self, request, context) -> ds.ListDeploymentHistoryResponse:
        model = parse_deployment_name(request.name)
        size = cv.page_size(request.page_size)
        before = cv.decode_int_token("deployhist", request.page_token, 2**62)
        rows = await self.deployments.history(caller_of(context), model, before, size + 1)
        token = cv.encode_token("deployhist", rows[size - 1][0]) if len(rows) > size else ""
        return ds.ListDeploymentHistoryResponse(
            entries=[history_to_proto(h) for _, h in rows[:size]], next_page_token=token
        )
