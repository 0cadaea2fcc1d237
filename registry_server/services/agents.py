"""AgentService: serving agents report what they serve; ops read desired against observed.
Proto in, use case, proto out."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from modelreg.v1 import agent_service_pb2 as ag
from modelreg.v1 import agent_service_pb2_grpc as ag_grpc
from registry_server.domain.agents import AgentRecord, ServedVersion
from registry_server.domain.names import model_name, parse_model_name
from registry_server.domain.signatures import Signature, Source, validate
from registry_server.errors import InvalidArgument
from registry_server.services import convert as cv
from registry_server.services.auth import caller_of
from registry_server.services.signature_convert import signature_from_proto
from registry_server.usecases.agents import Agents

AGENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
STATE_TO_ROW = {
    ag.SERVED_VERSION_STATE_LOADING: "loading",
    ag.SERVED_VERSION_STATE_SERVING: "serving",
    ag.SERVED_VERSION_STATE_FAILED: "failed",
    ag.SERVED_VERSION_STATE_UNLOADING: "unloading",
}
ROW_TO_STATE = {v: k for k, v in STATE_TO_ROW.items()}
MAX_MODELS = 256
MAX_VERSIONS = 16


def _served_to_proto(v: ServedVersion) -> ag.ServedVersion:
    return ag.ServedVersion(
        version=v.version,
        sha256=v.sha256,
        state=ROW_TO_STATE.get(v.state, ag.SERVED_VERSION_STATE_UNSPECIFIED),
        error=v.error,
        desired=v.desired,
        attempts=v.attempts,
        download_seconds=v.download_seconds,
        load_seconds=v.load_seconds,
        request_count=v.request_count,
        error_count=v.error_count,
        p95_latency_ms=v.p95_latency_ms,
        state_time=cv.ts(v.state_time),
    )


def _reported_signature(v: ag.ServedVersion, where: str) -> Signature | None:
    if not v.HasField("signature"):
        return None
    signature = signature_from_proto(v.signature, Source.AGENT)
    validate(signature, where)
    return signature


class AgentServicer(ag_grpc.AgentServiceServicer):
    def __init__(self, agents: Agents):
        self.agents = agents
        self.stale_after = int(agents.stale_after.total_seconds())

    def _agent_to_proto(self, a: AgentRecord, now: datetime) -> ag.Agent:
        return ag.Agent(
            name=f"agents/{a.agent_id}",
            agent_id=a.agent_id,
            node=a.node,
            address=a.address,
            healthy=a.healthy,
            start_time=cv.ts(a.started_at),
            report_time=cv.ts(a.reported_at),
            stale=self.agents.is_stale(a, now),
            models=[
                ag.AgentModelStatus(model=model_name(m), versions=[_served_to_proto(v) for v in vs])
                for m, vs in sorted(a.models.items())
            ],
        )

    async def ReportAgentStatus(self, request: ag.ReportAgentStatusRequest, context) -> ag.ReportAgentStatusResponse:
        a = request.agent
        if not AGENT_ID.match(a.agent_id):
            raise InvalidArgument(
                f"agent.agent_id {a.agent_id!r} is invalid: use 1 to 128 letters, digits, '-', '_', '.' or ':'"
            )
        if len(a.models) > MAX_MODELS:
            raise InvalidArgument(f"agent.models has {len(a.models)} entries; report at most {MAX_MODELS} models")
        record = AgentRecord(
            agent_id=a.agent_id,
            node=a.node[:256],
            address=a.address[:512],
            healthy=a.healthy,
            started_at=cv.timestamp(a.start_time, "agent.start_time") if a.HasField("start_time") else None,
        )
        for i, m in enumerate(a.models):
            model = parse_model_name(m.model, f"agent.models[{i}].model")
            if len(m.versions) > MAX_VERSIONS:
                raise InvalidArgument(f"agent.models[{i}] reports {len(m.versions)} versions; at most {MAX_VERSIONS}")
            rows = record.models.setdefault(model, [])
            for j, v in enumerate(m.versions):
                if v.version < 1 or v.state not in STATE_TO_ROW:
                    raise InvalidArgument(
                        f"agent.models[{i}].versions[{j}] needs a positive version and a state "
                        "(LOADING, SERVING, FAILED or UNLOADING)"
                    )
                rows.append(
                    ServedVersion(
                        version=v.version,
                        sha256=v.sha256[:64],
                        state=STATE_TO_ROW[v.state],
                        error=v.error[:2000],
                        desired=v.desired,
                        attempts=v.attempts,
                        download_seconds=v.download_seconds,
                        load_seconds=v.load_seconds,
                        request_count=v.request_count,
                        error_count=v.error_count,
                        p95_latency_ms=v.p95_latency_ms,
                        state_time=(
                            cv.timestamp(v.state_time, f"agent.models[{i}].versions[{j}].state_time")
                            if v.HasField("state_time")
                            else None
                        ),
                        signature=_reported_signature(v, f"agent.models[{i}].versions[{j}].signature"),
                    )
                )
        await self.agents.report(caller_of(context), record)
        return ag.ReportAgentStatusResponse(stale_after_seconds=self.stale_after)

    async def ListAgents(self, request: ag.ListAgentsRequest, context) -> ag.ListAgentsResponse:
        size = cv.page_size(request.page_size)
        after = cv.decode_token("agents", request.page_token) or ""
        model = parse_model_name(request.model, "model") if request.model else ""
        agents, last = await self.agents.list(caller_of(context), after, size, model, request.include_stale)
        now = datetime.now(UTC)
        return ag.ListAgentsResponse(
            agents=[self._agent_to_proto(a, now) for a in agents],
            next_page_token=cv.encode_token("agents", last) if last else "",
            stale_after_seconds=self.stale_after,
        )

    async def GetRolloutStatus(self, request: ag.GetRolloutStatusRequest, context) -> ag.GetRolloutStatusResponse:
        model = parse_model_name(request.model, "model")
        rollout = await self.agents.rollout(caller_of(context), model)
        return ag.GetRolloutStatusResponse(
            model=model_name(model),
            deployment=cv.deployment_to_proto(rollout.deployment),
            agents=[
                ag.AgentRollout(
                    agent=f"agents/{r.agent.agent_id}",
                    node=r.agent.node,
                    versions=[_served_to_proto(v) for v in r.versions],
                    converged=r.converged,
                    stale=r.stale,
                    report_time=cv.ts(r.agent.reported_at),
                )
                for r in rollout.agents
            ],
            complete=rollout.complete,
            converged_agents=rollout.converged_agents,
            live_agents=rollout.live_agents,
        )
