"""Use cases of serving agents: record a report, list agents, and the rollout status of a
model (its desired deployment against what every live agent serves)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from registry_server.domain import agents as da
from registry_server.domain.access import Caller, Permission
from registry_server.domain.deployments import Deployment
from registry_server.errors import ModelNotFound, PermissionDenied
from registry_server.storage.agents import AgentStore
from registry_server.storage.deployments import DeploymentStore
from registry_server.storage.models import ModelStore
from registry_server.usecases.access import Access

log = logging.getLogger("modelreg.agents")

ROLLOUT_PAGE = 500
#: Versions whose agent-reported signature this process already offered to storage.
MAX_OFFERED = 100_000


@dataclass
class AgentRollout:
    agent: da.AgentRecord
    versions: list[da.ServedVersion]
    converged: bool
    stale: bool


@dataclass
class Rollout:
    deployment: Deployment
    agents: list[AgentRollout] = field(default_factory=list)

    @property
    def live_agents(self) -> int:
        return sum(not a.stale for a in self.agents)

    @property
    def converged_agents(self) -> int:
        return sum(a.converged and not a.stale for a in self.agents)

    @property
    def complete(self) -> bool:
        return self.live_agents > 0 and self.converged_agents == self.live_agents


class Agents:
    def __init__(
        self,
        store: AgentStore,
        deployments: DeploymentStore,
        stale_after: timedelta,
        access: Access,
        models: ModelStore | None = None,
    ):
        self.access = access
        self.store = store
        self.deployments = deployments
        self.stale_after = stale_after
        self.models = models
        self._offered: set[tuple[str, int, str]] = set()

    def is_stale(self, agent: da.AgentRecord, now: datetime) -> bool:
        return da.is_stale(agent, now, self.stale_after)

    async def report(self, caller: Caller, agent: da.AgentRecord) -> datetime:
        """Records a report: agents.report in the project of every reported model that
        exists (and somewhere, for a report of none)."""
        if caller.authenticated:
            checked = False
            for model in agent.models:
                try:
                    await self.access.require(caller, Permission.REPORT, model=model)
                    checked = True
                except ModelNotFound:
                    continue
            grants = self.access.current_grants(caller)
            if not checked and not grants.admin and not any(Permission.REPORT in p for p in grants.by_project.values()):
                raise PermissionDenied(
                    f"principal {caller.principal!r} lacks permission 'agents.report' in every project; grant it "
                    "the agent role in the project of the models it serves"
                )
        reported = await self.store.save_report(agent)
        await self._learn_signatures(caller, agent)
        return reported

    async def _learn_signatures(self, caller: Caller, agent: da.AgentRecord) -> None:
        """A version without a signature (a YOLO `.pt`) gets the one the first agent that
        serves it reports, if the agent serves the version's bytes. Stored at most once: a
        version's signature is never replaced. Each (version, sha256) is offered to storage
        once per process, so the reports every few seconds cost no query."""
        if self.models is None:
            return
        for model, versions in agent.models.items():
            for v in versions:
                key = (model, v.version, v.sha256)
                if v.signature is None or v.state != "serving" or key in self._offered:
                    continue
                if len(self._offered) >= MAX_OFFERED:
                    self._offered.clear()
                self._offered.add(key)
                if await self.models.set_signature_once(model, v.version, v.sha256, v.signature, caller.name):
                    log.info(
                        "models/%s/versions/%d: signature learned from agent %s",
                        model,
                        v.version,
                        agent.agent_id,
                        extra={"principal": caller.name},
                    )

    async def _visible(self, caller: Caller, agent: da.AgentRecord) -> da.AgentRecord | None:
        """The agent as the caller may see it: only the models of projects it may read;
        None when it may read none of them."""
        if not caller.authenticated or self.access.readable(caller) is None:
            return agent
        models = {}
        for m, versions in agent.models.items():
            try:
                project = await self.access.project_of(m)
            except ModelNotFound:
                continue
            if caller.allows(Permission.READ, project):
                models[m] = versions
        if not models:
            return None
        return replace(agent, models=models) if len(models) != len(agent.models) else agent

    async def list(
        self, caller: Caller, after: str, limit: int, model: str, include_stale: bool
    ) -> tuple[list[da.AgentRecord], str]:
        """Up to `limit` agents after id `after` (live ones unless `include_stale`), and the
        id to continue after ('' at the end); with auth on, only agents serving a model the
        caller may read, showing only such models. Agents are filtered after the query, so
        pages are read until one is full."""
        if model:
            await self.access.require(caller, Permission.READ, model=model)
        now = datetime.now(UTC)
        out: list[da.AgentRecord] = []
        while len(out) <= limit:
            batch = await self.store.list_agents(after, limit + 1, model)
            for a in batch:
                if not include_stale and self.is_stale(a, now):
                    continue
                seen = await self._visible(caller, a)
                if seen is not None:
                    out.append(seen)
            if len(batch) <= limit:
                break
            after = batch[-1].agent_id
        if len(out) > limit:
            return out[:limit], out[limit - 1].agent_id
        return out, ""

    async def rollout(self, caller: Caller, model: str) -> Rollout:
        await self.access.require(caller, Permission.READ, model=model)
        rollout = Rollout(await self.deployments.get(model))
        now = datetime.now(UTC)
        after = ""
        while True:
            batch = await self.store.list_agents(after, ROLLOUT_PAGE, model)
            for a in batch:
                versions = a.models.get(model, [])
                rollout.agents.append(
                    AgentRollout(a, versions, da.converged(versions, rollout.deployment), self.is_stale(a, now))
                )
            if len(batch) < ROLLOUT_PAGE:
                return rollout
            after = batch[-1].agent_id
