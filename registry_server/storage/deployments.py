"""Stage moves and deployments: the writes that change what agents serve.

A `_Change` collects, inside one transaction, the events, stage transitions and deployment
history rows of an operation; `_commit` emits the events last (the global counter lock is
held to commit) and writes the history rows with their sequence numbers. Every change of
the production version goes through `_move_stage` and `_sync_deployment`, whether it came
from PromoteModelVersion, a canary promotion or a rollback, so stages, the hot pointer,
the deployment revision and the history never disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from registry_server.domain import deployments as dd
from registry_server.domain.models import ModelVersion, StageTransition
from registry_server.domain.stages import Stage, plan_promotion
from registry_server.errors import InvalidArgument, ModelNotFound, VersionNotFound
from registry_server.storage.repository import EventDraft, Repository, _no_alias, _version


@dataclass
class _Change:
    model: str
    actor: str
    drafts: list[EventDraft] = field(default_factory=list)
    # (draft index, version, from, to, reason)
    transitions: list[tuple[int, int, str, str, str]] = field(default_factory=list)
    # (draft index, revision, action, reason, before, after)
    history: list[tuple[int, int, str, str, dict, dict]] = field(default_factory=list)
    # Artifact digests of the version rows this change already holds (saves a query each).
    shas: dict[int, str] = field(default_factory=dict)

    def add(self, draft: EventDraft) -> int:
        self.drafts.append(draft)
        return len(self.drafts) - 1


@dataclass
class Deployment:
    model: str
    state: dd.DeploymentState
    policy: dd.CanaryPolicy
    stable_sha256: str = ""
    canary_sha256: str = ""
    updated_by: str = ""
    update_time: Any = None


@dataclass
class HistoryEntry:
    id: int
    model: str
    revision: int
    action: str
    actor: str
    reason: str
    before: dd.DeploymentState
    after: dd.DeploymentState
    sequence: int
    create_time: Any


class DeploymentRepository:
    def __init__(self, repo: Repository):
        self.repo = repo
        self.pool = repo.pool

    # ------------------------------------------------------------------ plumbing

    async def _lock_model(self, conn: asyncpg.Connection, model: str) -> asyncpg.Record:
        mrow = await conn.fetchrow(
            "SELECT name, production_version, last_version FROM models WHERE name = $1 FOR UPDATE", model
        )
        if mrow is None:
            raise ModelNotFound(model)
        return mrow

    async def _load_state(
        self, conn: asyncpg.Connection, model: str, production: int | None, lock: bool
    ) -> tuple[dd.DeploymentState, dd.CanaryPolicy]:
        query = "SELECT * FROM deployments WHERE model = $1" + (" FOR UPDATE" if lock else "")
        row = await conn.fetchrow(query, model)
        if row is None and lock:  # the model's first deployment change
            await conn.execute("INSERT INTO deployments (model) VALUES ($1) ON CONFLICT DO NOTHING", model)
            row = await conn.fetchrow(query, model)
        if row is None:
            return dd.DeploymentState(stable_version=production or 0), dd.CanaryPolicy()
        state = dd.DeploymentState(production or 0, row["canary_version"], row["canary_weight"], row["revision"])
        return state, dd.CanaryPolicy.from_dict(row["policy"])

    async def _version_sha(
        self, conn: asyncpg.Connection, model: str, version: int, known: dict[int, str] | None = None
    ) -> str:
        if not version:
            return ""
        if known and version in known:
            return known[version]
        return await conn.fetchval(
            "SELECT sha256 FROM model_versions WHERE model = $1 AND version = $2", model, version
        ) or ""

    async def _move_stage(
        self, conn: asyncpg.Connection, ch: _Change, mrow: asyncpg.Record, number: int, target: Stage, reason: str
    ) -> tuple[asyncpg.Record, asyncpg.Record | None, int]:
        """Moves `number` to `target` (archiving the previous production version when
        promoting to production). Returns (version row, archived row, new production)."""
        model = ch.model
        vrow = await conn.fetchrow(
            "SELECT stage FROM model_versions WHERE model = $1 AND version = $2 FOR UPDATE", model, number
        )
        if vrow is None:
            raise VersionNotFound(model, number)
        plan = plan_promotion(model, number, Stage(vrow["stage"]), target)
        previous = mrow["production_version"] or 0
        archived_row = None
        if plan.archive_current_production and previous and previous != number:
            archived_row = await conn.fetchrow(
                "UPDATE model_versions SET stage = 'archived', updated_at = now()"
                " WHERE model = $1 AND version = $2 RETURNING *",
                model,
                previous,
            )
            why = reason or f"replaced by version {number}"
            i = ch.add(
                EventDraft(
                    "STAGE_CHANGED", model, previous, "production", "archived", why,
                    {"sha256": archived_row["sha256"], "replaced_by": number},
                )
            )
            ch.transitions.append((i, previous, "production", "archived", reason))
            ch.shas[previous] = archived_row["sha256"]
        row = await conn.fetchrow(
            "UPDATE model_versions SET stage = $3, updated_at = now() WHERE model = $1 AND version = $2 RETURNING *",
            model,
            number,
            target.value,
        )
        ch.shas[number] = row["sha256"]
        if target == Stage.PRODUCTION:
            production = number
        elif plan.from_stage == Stage.PRODUCTION:
            production = 0
        else:
            production = previous
        if production != previous:
            await conn.execute(
                "UPDATE models SET production_version = $2, updated_at = now() WHERE name = $1",
                model,
                production or None,
            )
        i = ch.add(
            EventDraft(
                "STAGE_CHANGED", model, number, plan.from_stage.value, target.value, reason, {"sha256": row["sha256"]}
            )
        )
        ch.transitions.append((i, number, plan.from_stage.value, target.value, reason))
        return row, archived_row, production

    async def _sync_deployment(
        self,
        conn: asyncpg.Connection,
        ch: _Change,
        before: dd.DeploymentState,
        after: dd.DeploymentState,
        action: dd.Action,
        reason: str,
    ) -> None:
        """Persists a deployment change: the row, a history entry and a DEPLOYMENT_CHANGED
        event carrying the whole desired state (what agents act on)."""
        if after == before:
            return
        await conn.execute(
            "UPDATE deployments SET canary_version = $2, canary_weight = $3, revision = $4,"
            " updated_by = $5, updated_at = now() WHERE model = $1",
            ch.model,
            after.canary_version,
            after.canary_weight,
            after.revision,
            ch.actor,
        )
        details = {
            **after.as_dict(),
            "stable_sha256": await self._version_sha(conn, ch.model, after.stable_version, ch.shas),
            "canary_sha256": await self._version_sha(conn, ch.model, after.canary_version, ch.shas),
            "action": action.value,
        }
        i = ch.add(EventDraft("DEPLOYMENT_CHANGED", ch.model, after.stable_version, reason=reason, details=details))
        ch.history.append((i, after.revision, action.value, reason, before.as_dict(), after.as_dict()))

    async def _commit(self, conn: asyncpg.Connection, ch: _Change) -> int:
        last = await self.repo._emit(conn, ch.actor, ch.drafts)
        first = last - len(ch.drafts) + 1
        if ch.transitions or ch.history:  # both in one round trip (the counter lock is held)
            await conn.execute(
                "WITH t AS (INSERT INTO stage_transitions (model, version, from_stage, to_stage, actor, reason, sequence)"
                " SELECT $1, v, f, t, $2, r, s FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[])"
                " AS x(v, f, t, r, s))"
                " INSERT INTO deployment_history (model, revision, action, actor, reason, before, after, sequence)"
                " SELECT $1, rev, a, $2, r, b::jsonb, af::jsonb, s"
                " FROM unnest($8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[])"
                " AS y(rev, a, r, b, af, s)",
                ch.model,
                ch.actor,
                [v for _, v, _, _, _ in ch.transitions],
                [f for _, _, f, _, _ in ch.transitions],
                [t for _, _, _, t, _ in ch.transitions],
                [r for _, _, _, _, r in ch.transitions],
                [first + i for i, *_ in ch.transitions],
                [rev for _, rev, _, _, _, _ in ch.history],
                [a for _, _, a, _, _, _ in ch.history],
                [r for _, _, _, r, _, _ in ch.history],
                [json.dumps(b) for _, _, _, _, b, _ in ch.history],
                [json.dumps(af) for _, _, _, _, _, af in ch.history],
                [first + i for i, *_ in ch.history],
            )
        return last

    async def _resolve_locked(self, conn: asyncpg.Connection, model: str, ref: int | str, mrow) -> int:
        if isinstance(ref, int):
            return ref
        if ref == "production":
            if not mrow["production_version"]:
                raise _no_alias(model, ref, "in production")
            return mrow["production_version"]
        if ref == "latest":
            if not mrow["last_version"]:
                raise _no_alias(model, ref, "registered")
            return mrow["last_version"]
        n = await conn.fetchval(
            "SELECT version FROM model_versions WHERE model = $1 AND stage = 'staging' ORDER BY version DESC LIMIT 1",
            model,
        )
        if n is None:
            raise _no_alias(model, ref, "in staging")
        return n

    # ------------------------------------------------------------------ stage moves

    async def promote(
        self, model: str, ref: int | str, target: Stage, reason: str, actor: str
    ) -> tuple[ModelVersion, ModelVersion | None, int]:
        """Moves a version to `target`; promoting to production archives the previous
        production version in the same transaction. Returns (version, archived, sequence)."""
        async with self.repo.transaction() as conn:
            mrow = await self._lock_model(conn, model)
            number = await self._resolve_locked(conn, model, ref, mrow)
            ch = _Change(model, actor)
            before, _ = await self._load_state(conn, model, mrow["production_version"], lock=True)
            row, archived, production = await self._move_stage(conn, ch, mrow, number, target, reason)
            after = dd.after_stage_change(before, production)
            await self._sync_deployment(conn, ch, before, after, dd.Action.PROMOTE, reason)
            last = await self._commit(conn, ch)
            return _version(row), (_version(archived) if archived else None), last

    async def list_transitions(self, model: str, before_id: int, limit: int) -> list[tuple[int, StageTransition]]:
        rows = await self.pool.fetch(
            "SELECT * FROM stage_transitions WHERE model = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            model,
            before_id,
            limit,
        )
        if not rows:
            await self.repo.require_model(model)
        return [
            (
                r["id"],
                StageTransition(
                    model=r["model"],
                    version=r["version"],
                    from_stage=Stage(r["from_stage"]),
                    to_stage=Stage(r["to_stage"]),
                    actor=r["actor"],
                    reason=r["reason"],
                    create_time=r["created_at"],
                    sequence=r["sequence"],
                ),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ deployments

    async def get(self, model: str) -> Deployment:
        async with self.pool.acquire() as conn:
            await self.repo.require_model(model, conn)
            return await self._deployment(conn, model)

    async def change(
        self,
        model: str,
        action: dd.Action,
        actor: str,
        reason: str,
        etag: str,
        *,
        version: int = 0,
        weight: int = 0,
        expect_canary: int = 0,
    ) -> tuple[Deployment, int]:
        """Applies one deployment action in one transaction. Returns (deployment, sequence)."""
        async with self.repo.transaction() as conn:
            mrow = await self._lock_model(conn, model)
            before, _ = await self._load_state(conn, model, mrow["production_version"], lock=True)
            dd.check_etag(model, before, etag)
            if expect_canary and before.canary_version != expect_canary:
                # An automatic verdict about a canary that is no longer running: nothing to do.
                return await self._deployment(conn, model), 0
            ch = _Change(model, actor)
            if action == dd.Action.SET_CANARY:
                await self._require_version(conn, model, version)
                after = dd.set_canary(model, before, version, weight)
            elif action in (dd.Action.ABORT_CANARY, dd.Action.AUTO_ABORT):
                after = dd.abort_canary(model, before)
            elif action in (dd.Action.PROMOTE_CANARY, dd.Action.AUTO_PROMOTE):
                after = dd.promote_canary(model, before)
                await self._move_stage(conn, ch, mrow, after.stable_version, Stage.PRODUCTION, reason)
            elif action == dd.Action.ROLLBACK:
                target = version or await self._previous_production(conn, model, before.stable_version)
                if version:
                    await self._require_version(conn, model, version)
                after = dd.rollback(model, before, target)
                if target != before.stable_version:
                    await self._move_stage(conn, ch, mrow, target, Stage.PRODUCTION, reason)
            else:  # pragma: no cover - every action is handled above
                raise InvalidArgument(f"unknown deployment action {action}")
            await self._sync_deployment(conn, ch, before, after, action, reason)
            last = await self._commit(conn, ch)
            return await self._deployment(conn, model), last

    async def set_policy(self, model: str, policy: dd.CanaryPolicy, actor: str) -> Deployment:
        policy.validate()
        async with self.repo.transaction() as conn:
            await self._lock_model(conn, model)
            await conn.execute("INSERT INTO deployments (model) VALUES ($1) ON CONFLICT DO NOTHING", model)
            await conn.execute(
                "UPDATE deployments SET policy = $2, updated_by = $3, updated_at = now() WHERE model = $1",
                model,
                policy.as_dict(),
                actor,
            )
            return await self._deployment(conn, model)

    async def _deployment(self, conn: asyncpg.Connection, model: str) -> Deployment:
        mrow = await conn.fetchrow("SELECT production_version FROM models WHERE name = $1", model)
        state, policy = await self._load_state(conn, model, mrow["production_version"], lock=False)
        meta = await conn.fetchrow("SELECT updated_by, updated_at FROM deployments WHERE model = $1", model)
        return Deployment(
            model=model,
            state=state,
            policy=policy,
            stable_sha256=await self._version_sha(conn, model, state.stable_version),
            canary_sha256=await self._version_sha(conn, model, state.canary_version),
            updated_by=meta["updated_by"] if meta else "",
            update_time=meta["updated_at"] if meta else None,
        )

    async def _require_version(self, conn: asyncpg.Connection, model: str, version: int) -> None:
        if not await conn.fetchval(
            "SELECT 1 FROM model_versions WHERE model = $1 AND version = $2", model, version
        ):
            raise VersionNotFound(model, version)

    async def _previous_production(self, conn: asyncpg.Connection, model: str, current: int) -> int:
        """The most recent version before `current` that entered production and still exists."""
        return await conn.fetchval(
            "SELECT t.version FROM stage_transitions t JOIN model_versions v"
            " ON v.model = t.model AND v.version = t.version"
            " WHERE t.model = $1 AND t.to_stage = 'production' AND t.version <> $2"
            " ORDER BY t.id DESC LIMIT 1",
            model,
            current,
        ) or 0

    async def history(self, model: str, before_id: int, limit: int) -> list[HistoryEntry]:
        rows = await self.pool.fetch(
            "SELECT * FROM deployment_history WHERE model = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            model,
            before_id,
            limit,
        )
        if not rows:
            await self.repo.require_model(model)
        return [
            HistoryEntry(
                id=r["id"],
                model=r["model"],
                revision=r["revision"],
                action=r["action"],
                actor=r["actor"],
                reason=r["reason"],
                before=dd.DeploymentState(**r["before"]),
                after=dd.DeploymentState(**r["after"]),
                sequence=r["sequence"],
                create_time=r["created_at"],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ canary judging

    async def judged_canaries(self) -> list[tuple[str, int, int, dd.CanaryPolicy]]:
        """(model, stable, canary, policy) for every running canary with a policy."""
        rows = await self.pool.fetch(
            "SELECT d.model, m.production_version, d.canary_version, d.policy FROM deployments d"
            " JOIN models m ON m.name = d.model"
            " WHERE d.canary_version > 0 AND d.policy <> '{}'::jsonb"
        )
        out = []
        for r in rows:
            policy = dd.CanaryPolicy.from_dict(r["policy"])
            if policy.enabled:
                out.append((r["model"], r["production_version"] or 0, r["canary_version"], policy))
        return out

    async def version_stats(self, model: str, versions: list[int]) -> dict[int, dd.VersionStats]:
        """What agents report for these versions, summed over agents; p95 is the
        request-weighted mean of the agents' p95s. Agents silent for a minute are ignored."""
        rows = await self.pool.fetch(
            "SELECT s.version, sum(s.request_count) AS requests, sum(s.error_count) AS errors,"
            " CASE WHEN sum(s.request_count) > 0"
            "  THEN sum(s.p95_latency_ms * s.request_count) / sum(s.request_count) ELSE 0 END AS p95"
            " FROM agent_model_status s JOIN agents a ON a.agent_id = s.agent_id"
            " WHERE s.model = $1 AND s.version = ANY($2::bigint[])"
            " AND a.reported_at > now() - interval '60 seconds'"
            " GROUP BY s.version",
            model,
            versions,
        )
        return {
            r["version"]: dd.VersionStats(int(r["requests"] or 0), int(r["errors"] or 0), float(r["p95"] or 0))
            for r in rows
        }
