"""SDK methods for deployments: canaries, promotion of a canary, rollback, history.
Mixed into `modelreg.Client`."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

from modelreg.v1 import deployment_service_pb2 as ds
from modelreg.v1 import deployment_service_pb2_grpc as ds_grpc
from modelreg.v1 import resources_pb2 as res


def describe(deployment: res.Deployment) -> tuple[str, str]:
    """("v3 (1f2e3d4c5b6a)", "v4 at 10% (9a8b7c6d5e4f)") for a deployment's stable and
    canary, "none" where unset."""
    stable = deployment.stable
    canary = deployment.canary
    s = f"v{stable.version_number} ({stable.sha256[:12]})" if deployment.HasField("stable") else "none"
    c = (
        f"v{canary.version_number} at {deployment.canary_weight}% ({canary.sha256[:12]})"
        if deployment.HasField("canary")
        else "none"
    )
    return s, c


def deployment_name(model: str) -> str:
    model = model.removeprefix("models/").removesuffix("/deployment")
    return f"models/{model}/deployment"


class DeploymentMixin:
    """Needs `self._channel` and `self._call` from `Client`."""

    @cached_property
    def deployment_stub(self) -> ds_grpc.DeploymentServiceStub:
        return ds_grpc.DeploymentServiceStub(self._channel)

    def get_deployment(self, model: str) -> res.Deployment:
        return self._call(self.deployment_stub.GetDeployment, ds.GetDeploymentRequest(name=deployment_name(model))).deployment

    def set_canary(self, model: str, version: int, weight: int, *, reason: str = "", etag: str = "") -> ds.SetCanaryResponse:
        req = ds.SetCanaryRequest(name=deployment_name(model), version=version, weight=weight, reason=reason, etag=etag)
        return self._call(self.deployment_stub.SetCanary, req)

    def promote_canary(self, model: str, *, reason: str = "", etag: str = "") -> ds.PromoteCanaryResponse:
        req = ds.PromoteCanaryRequest(name=deployment_name(model), reason=reason, etag=etag)
        return self._call(self.deployment_stub.PromoteCanary, req)

    def abort_canary(self, model: str, *, reason: str = "", etag: str = "") -> ds.AbortCanaryResponse:
        req = ds.AbortCanaryRequest(name=deployment_name(model), reason=reason, etag=etag)
        return self._call(self.deployment_stub.AbortCanary, req)

    def rollback(self, model: str, *, to_version: int = 0, reason: str = "", etag: str = "") -> ds.RollbackResponse:
        req = ds.RollbackRequest(name=deployment_name(model), to_version=to_version, reason=reason, etag=etag)
        return self._call(self.deployment_stub.Rollback, req)

    def set_canary_policy(
        self,
        model: str,
        *,
        max_error_rate: float = 0.0,
        max_latency_ratio: float = 0.0,
        min_requests: int = 100,
        auto_promote_after: int = 0,
    ) -> res.Deployment:
        policy = res.CanaryPolicy(
            max_error_rate=max_error_rate,
            max_latency_ratio=max_latency_ratio,
            min_requests=min_requests,
            auto_promote_after=auto_promote_after,
        )
        req = ds.SetCanaryPolicyRequest(name=deployment_name(model), policy=policy)
        return self._call(self.deployment_stub.SetCanaryPolicy, req).deployment

    def deployment_history(self, model: str, *, page_size: int = 0) -> Iterator[ds.DeploymentHistoryEntry]:
        token = ""
        while True:
            req = ds.ListDeploymentHistoryRequest(name=deployment_name(model), page_size=page_size, page_token=token)
            resp = self._call(self.deployment_stub.ListDeploymentHistory, req)
            yield from resp.entries
            token = resp.next_page_token
            if not token:
                return
