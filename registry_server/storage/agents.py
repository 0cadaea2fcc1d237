"""SQL for serving agents' status reports (tables from migration 0002_agents)."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from registry_server.domain.agents import AgentRecord, ServedVersion
from registry_server.domain.deployments import VersionStats


class AgentStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def save_report(self, agent: AgentRecord) -> datetime:
        """Replaces the agent's status with this report. Returns the report time."""
        async with self.pool.acquire() as conn, conn.transaction():
            reported = await conn.fetchval(
                "INSERT INTO agents (agent_id, node, address, healthy, started_at, reported_at)"
                " VALUES ($1, $2, $3, $4, $5, now())"
                " ON CONFLICT (agent_id) DO UPDATE SET node = EXCLUDED.node, address = EXCLUDED.address,"
                " healthy = EXCLUDED.healthy, started_at = EXCLUDED.started_at, reported_at = now()"
                " RETURNING reported_at",
                agent.agent_id,
                agent.node,
                agent.address,
                agent.healthy,
                agent.started_at,
            )
            await conn.execute("DELETE FROM agent_models WHERE agent_id = $1", agent.agent_id)
            await conn.execute("DELETE FROM agent_model_status WHERE agent_id = $1", agent.agent_id)
            await conn.executemany(
                "INSERT INTO agent_models (agent_id, model) VALUES ($1, $2)",
                [(agent.agent_id, m) for m in agent.models],
            )
            rows = [
                (
                    agent.agent_id,
                    model,
                    v.version,
                    v.sha256,
                    v.state,
                    v.error,
                    v.desired,
                    v.attempts,
                    v.download_seconds,
                    v.load_seconds,
                    v.request_count,
                    v.error_count,
                    v.p95_latency_ms,
                    v.state_time,
                )
                for model, versions in agent.models.items()
                for v in versions
            ]
            await conn.executemany(
                "INSERT INTO agent_model_status (agent_id, model, version, sha256, state, error, desired,"
                " attempts, download_seconds, load_seconds, request_count, error_count, p95_latency_ms,"
                " state_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                " ON CONFLICT (agent_id, model, version) DO NOTHING",
                rows,
            )
        return reported

    async def list_agents(self, after: str, limit: int, model: str = "") -> list[AgentRecord]:
        """Agents with id > `after` in id order (only those following `model` when set)."""
        async with self.pool.acquire() as conn:
            if model:
                heads = await conn.fetch(
                    "SELECT a.* FROM agents a JOIN agent_models m USING (agent_id)"
                    " WHERE m.model = $1 AND a.agent_id > $2 ORDER BY a.agent_id LIMIT $3",
                    model,
                    after,
                    limit,
                )
            else:
                heads = await conn.fetch(
                    "SELECT * FROM agents WHERE agent_id > $1 ORDER BY agent_id LIMIT $2", after, limit
                )
            agents = {
                r["agent_id"]: AgentRecord(
                    agent_id=r["agent_id"],
                    node=r["node"],
                    address=r["address"],
                    healthy=r["healthy"],
                    started_at=r["started_at"],
                    reported_at=r["reported_at"],
                )
                for r in heads
            }
            if not agents:
                return []
            ids = list(agents)
            for r in await conn.fetch(
                "SELECT agent_id, model FROM agent_models WHERE agent_id = ANY($1::text[]) ORDER BY model", ids
            ):
                if not model or r["model"] == model:
                    agents[r["agent_id"]].models.setdefault(r["model"], [])
            for r in await conn.fetch(
                "SELECT * FROM agent_model_status WHERE agent_id = ANY($1::text[]) ORDER BY model, version DESC", ids
            ):
                if model and r["model"] != model:
                    continue
                agents[r["agent_id"]].models.setdefault(r["model"], []).append(
                    ServedVersion(
                        version=r["version"],
                        sha256=r["sha256"],
                        state=r["state"],
                        error=r["error"],
                        desired=r["desired"],
                        attempts=r["attempts"],
                        download_seconds=r["download_seconds"],
                        load_seconds=r["load_seconds"],
                        request_count=r["request_count"],
                        error_count=r["error_count"],
                        p95_latency_ms=r["p95_latency_ms"],
                        state_time=r["state_time"],
                    )
                )
            return list(agents.values())

    async def version_stats(self, model: str, versions: list[int], window: timedelta) -> dict[int, VersionStats]:
        """What agents that reported within `window` observed for these versions, summed over
        agents; p95 is the request-weighted mean of the agents' p95s."""
        rows = await self.pool.fetch(
            "SELECT s.version, sum(s.request_count) AS requests, sum(s.error_count) AS errors,"
            " CASE WHEN sum(s.request_count) > 0"
            "  THEN sum(s.p95_latency_ms * s.request_count) / sum(s.request_count) ELSE 0 END AS p95"
            " FROM agent_model_status s JOIN agents a ON a.agent_id = s.agent_id"
            " WHERE s.model = $1 AND s.version = ANY($2::bigint[]) AND a.reported_at > now() - $3::interval"
            " GROUP BY s.version",
            model,
            versions,
            window,
        )
        return {
            r["version"]: VersionStats(int(r["requests"] or 0), int(r["errors"] or 0), float(r["p95"] or 0))
            for r in rows
        }
