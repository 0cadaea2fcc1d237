"""AgentService: serving agents report what they serve; ops read desired against observed.

The servicer is thin: proto <-> records, plus `converged`, the one rule of a rollout.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone

from modelreg.v1 import agent_service_pb2 as ag
from modelreg.v1 import agent_service_pb2_grpc as ag_grpc
from registry_server.domain.names import model_name, parse_model_name
from registry_server.errors import InvalidArgument, ModelNotFound
from registry_server.services import convert as cv
from registry_server.services.status import grpc_errors
from registry_server.storage.agents import AgentRecord, AgentRepository, Desired, ServedVersionRow

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


def stale_after_seconds() -> int:
    return int(os.environ.get("MODELREG_AGENT_STALE_SECONDS", "30"))


def converged(versions: list[ServedVersionRow], desired: Desired) -> bool:
    """An agent converged when it serves the desired version (and the canary, while one
    runs) with the desired digests, and no other version is left serving."""
    serving = {v.version: v for v in versions if v.state == "serving"}
    wanted = {desired.version: desired.sha256} if desired.version else {}
    if desired.canary_version:
        wanted[desired.canary_version] = desired.canary_sha256
    return set(serving) == set(wanted) and all(serving[v].sha256 == sha for v, sha in wanted.items())


def _served_to_proto(v: ServedVersionRow) -> ag.ServedVersion:
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


class AgentServicer(ag_grpc.AgentServiceServicer):
    def __init__(self, repo: AgentRepository):
        self.repo = repo
        self.stale_after = stale_after_seconds()

    def _is_stale(self, a: AgentRecord, now: datetime) -> bool:
        return a.reported_at is None or now - a.reported_at > timedelta(seconds=self.stale_after)

    def _agent_to_proto(self, a: AgentRecord, now: datetime) -> ag.Agent:
        return ag.Agent(
            name=f"agents/{a.agent_id}",
            agent_id=a.agent_id,
            node=a.node,
            address=a.address,
            healthy=a.healthy,
            start_time=cv.ts(a.started_at),
            report_time=cv.ts(a.reported_at),
            stale=self._is_stale(a, now),
            models=[
                ag.AgentModelStatus(model=model_name(m), versions=[_served_to_proto(v) for v in vs])
                for m, vs in sorted(a.models.items())
            ],
        )

    @grpc_errors
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
            started_at=a.start_time.ToDatetime(tzinfo=timezone.utc) if a.HasField("start_time") else None,
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
                    ServedVersionRow(
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
                        state_time=v.state_time.ToDatetime(tzinfo=timezone.utc) if v.HasField("state_time") else None,
                    )
                )
        await self.repo.save_report(record)
        return ag.ReportAgentStatusResponse(stale_after_seconds=self.stale_after)

    @grpc_errors
    async def ListAgents(self, request: ag.ListAgentsRequest, context) -> ag.ListAgentsResponse:
        size = cv.page_size(request.page_size)
        after = cv.decode_token("agents", request.page_token) or ""
        model = parse_model_name(request.model, "model") if request.model else ""
        now = datetime.now(timezone.utc)
        out: list[ag.Agent] = []
        token = ""
        # Stale agents are filtered after the query, so read pages until one is full.
        while len(out) <= size:
            batch = await self.repo.list_agents(after, size + 1, model)
            for a in batch:
                if request.include_stale or not self._is_stale(a, now):
                    out.append(self._agent_to_proto(a, now))
            if len(batch) <= size:
                break
            after = batch[-1].agent_id
        if len(out) > size:
            out = out[:size]
            token = cv.encode_token("agents", out[-1].agent_id)
        return ag.ListAgentsResponse(agents=out, next_page_token=token, stale_after_seconds=self.stale_after)

    @grpc_errors
    async def GetRolloutStatus(self, request: ag.GetRolloutStatusRequest, context) -> ag.GetRolloutStatusResponse:
        model = parse_model_name(request.model, "model")
        desired = await self.repo.desired(model)
        if desired is None:
            raise ModelNotFound(model)
        now = datetime.now(timezone.utc)
        resp = ag.GetRolloutStatusResponse(
            model=model_name(model),
            desired_version=desired.version,
            desired_sha256=desired.sha256,
            desired_canary_version=desired.canary_version,
            desired_canary_sha256=desired.canary_sha256,
            canary_weight=desired.canary_weight,
        )
        after = ""
        while True:
            batch = await self.repo.list_agents(after, 500, model)
            for a in batch:
                versions = a.models.get(model, [])
                stale = self._is_stale(a, now)
                ok = converged(versions, desired)
                resp.agents.append(
                    ag.AgentRollout(
                        agent=f"agents/{a.agent_id}",
                        node=a.node,
                        versions=[_served_to_proto(v) for v in versions],
                        converged=ok,
                        stale=stale,
                        report_time=cv.ts(a.reported_at),
                    )
                )
                if not stale:
                    resp.live_agents += 1
                    resp.converged_agents += int(ok)
            if len(batch) < 500:
                break
            after = batch[-1].agent_id
        resp.complete = resp.live_agents > 0 and resp.converged_agents == resp.live_agents
        return resp
