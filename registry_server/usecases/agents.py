"""Use cases of serving agents: record a report, list agents, and the rollout status of a
model (its desired deployment against what every live agent serves)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from registry_server.domain import agents as da
from registry_server.domain.deployments import Deployment
from registry_server.storage.agents import AgentStore
from registry_server.storage.deployments import DeploymentStore

ROLLOUT_PAGE = 500


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
    def __init__(self, store: AgentStore, deployments: DeploymentStore, stale_after: timedelta):
        self.store = store
        self.deployments = deployments
        self.stale_after = stale_after

    def is_stale(self, agent: da.AgentRecord, now: datetime) -> bool:
        return da.is_stale(agent, now, self.stale_after)

    async def report(self, agent: da.AgentRecord) -> datetime:
        return await self.store.save_report(agent)

    async def list(self, after: str, limit: int, model: str, include_stale: bool) -> tuple[list[da.AgentRecord], str]:
        """Up to `limit` agents after id `after` (live ones unless `include_stale`), and the
        id to continue after ('' at the end). Stale agents are filtered after the query, so
        pages are read until one is full."""
        now = datetime.now(UTC)
        out: list[da.AgentRecord] = []
        while len(out) <= limit:
            batch = await self.store.list_agents(after, limit + 1, model)
            out += [a for a in batch if include_stale or not self.is_stale(a, now)]
            if len(batch) <= limit:
                break
            after = batch[-1].agent_id
        if len(out) > limit:
            return out[:limit], out[limit - 1].agent_id
        return out, ""

    async def rollout(self, model: str) -> Rollout:
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
