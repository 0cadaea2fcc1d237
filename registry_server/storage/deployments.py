"""Deployments in Postgres: load a model's deployment under its row lock, persist a plan,
read deployments (one, or a snapshot of many at one sequence), history and transitions.

The stable version is `models.production_version`; the `deployments` row adds the canary,
its weight, the revision and the canary policy. Every deployment query builds the
`Deployment` with complete artifact references (`_SELECT`), so one statement answers what
an agent must serve. This module decides nothing: `domain.deployments` plans every change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from registry_server.domain import deployments as dd
from registry_server.domain.aliases import alias_not_found
from registry_server.domain.models import StageTransition
from registry_server.domain.stages import Stage
from registry_server.errors import ModelNotFound, VersionNotFound
from registry_server.storage.models import no_alias, require_model
from registry_server.storage.outbox import Outbox

# A model's deployment with its stable (production) and canary artifacts, from `models m`.
_SELECT = """
SELECT m.name, m.last_version, d.canary_weight, d.revision, d.policy, d.updated_by, d.updated_at,
       s.version AS s_version, s.sha256 AS s_sha256, s.size_bytes AS s_size, s.format AS s_format,
       s.model_type AS s_type, s.config AS s_config,
       c.version AS c_version, c.sha256 AS c_sha256, c.size_bytes AS c_size, c.format AS c_format,
       c.model_type AS c_type, c.config AS c_config, c.stage AS c_stage
FROM models m
LEFT JOIN deployments d ON d.model = m.name
LEFT JOIN model_versions s ON s.model = m.name AND s.version = m.production_version
LEFT JOIN model_versions c ON c.model = m.name AND c.version = d.canary_version AND d.canary_version > 0
"""

# A locked write's load: the deployment, and the version the request names ($2, 0 for none).
_SELECT_WITH_TARGET = (
    _SELECT.replace(
        "FROM models m",
        ", t.version AS t_version, t.sha256 AS t_sha256, t.size_bytes AS t_size, t.format AS t_format,"
        " t.model_type AS t_type, t.config AS t_config, t.stage AS t_stage FROM models m",
        1,
    )
    + " LEFT JOIN model_versions t ON t.model = m.name AND t.version = $2"
)

# Persists a plan's stage moves, the production pointer and the deployment row in one round
# trip; returns the moved version rows.
_PERSIST = """
WITH mv AS (
    UPDATE model_versions v SET stage = x.to_stage, updated_at = now()
    FROM unnest($2::bigint[], $3::text[]) AS x(version, to_stage)
    WHERE v.model = $1 AND v.version = x.version
    RETURNING v.*
), m AS (
    UPDATE models SET production_version = $4, updated_at = now()
    WHERE name = $1 AND production_version IS DISTINCT FROM $4
    RETURNING 1
), d AS (
    INSERT INTO deployments (model, canary_version, canary_weight, revision, updated_by, updated_at)
    SELECT $1, $5, $6, $7, $8, now() WHERE $9
    ON CONFLICT (model) DO UPDATE SET canary_version = EXCLUDED.canary_version,
        canary_weight = EXCLUDED.canary_weight, revision = EXCLUDED.revision,
        updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at
    RETURNING 1
)
SELECT * FROM mv
"""


def _ref(r: asyncpg.Record, p: str) -> dd.ArtifactRef | None:
    if r[f"{p}_version"] is None:
        return None
    return dd.ArtifactRef.from_row(
        r["name"],
        r[f"{p}_version"],
        r[f"{p}_sha256"],
        r[f"{p}_size"],
        r[f"{p}_format"],
        r[f"{p}_type"],
        r[f"{p}_config"],
    )


def deployment_from_row(r: asyncpg.Record) -> dd.Deployment:
    canary = _ref(r, "c")
    return dd.Deployment(
        model=r["name"],
        stable=_ref(r, "s"),
        canary=canary,
        canary_weight=(r["canary_weight"] or 0) if canary else 0,
        revision=r["revision"] or 0,
        policy=dd.CanaryPolicy.from_dict(r["policy"]),
        updated_by=r["updated_by"] or "",
        update_time=r["updated_at"],
    )


def _info(row: asyncpg.Record) -> dd.VersionInfo:
    ref = dd.ArtifactRef.from_row(
        row["model"], row["version"], row["sha256"], row["size_bytes"], row["format"], row["model_type"], row["config"]
    )
    return dd.VersionInfo(ref, Stage(row["stage"]))


class DeploymentTx:
    """One deployment write's transaction: the model row is locked from `DeploymentStore.
    locked` to commit, so the loaded deployment cannot change under the plan."""

    def __init__(
        self,
        store: DeploymentStore,
        conn: asyncpg.Connection,
        deployment: dd.Deployment,
        last: int,
        known: list[dd.VersionInfo],
    ):
        self.store = store
        self.conn = conn
        self.deployment = deployment
        self._last_version = last
        # Versions the load already read (the one the request named, the canary): no query.
        self._known = {v.version: v for v in known}

    async def version(self, ref: int | str) -> dd.VersionInfo:
        """A version of the locked model by number or alias (production, staging, latest, or a
        named alias)."""
        model, d = self.deployment.model, self.deployment
        if ref == "production":
            if d.stable is None:
                raise no_alias(model, "production", "in production")
            ref = d.stable.version
        elif ref == "latest":
            if not self._last_version:
                raise no_alias(model, "latest", "registered")
            ref = self._last_version
        if isinstance(ref, int) and ref in self._known:
            return self._known[ref]
        if ref == "staging":
            row = await self.conn.fetchrow(
                "SELECT * FROM model_versions WHERE model = $1 AND stage = 'staging' ORDER BY version DESC LIMIT 1",
                model,
            )
            if row is None:
                raise no_alias(model, "staging", "in staging")
        elif isinstance(ref, str):  # a named alias (champion)
            row = await self.conn.fetchrow(
                "SELECT v.* FROM model_aliases a JOIN model_versions v ON v.model = a.model AND v.version = a.version"
                " WHERE a.model = $1 AND a.alias = $2",
                model,
                ref,
            )
            if row is None:
                raise alias_not_found(model, ref)
        else:
            row = await self.conn.fetchrow("SELECT * FROM model_versions WHERE model = $1 AND version = $2", model, ref)
            if row is None:
                raise VersionNotFound(model, ref)
        return _info(row)

    async def previous_production(self) -> dd.VersionInfo | None:
        """The most recent version other than the stable one that entered production and
        still exists."""
        row = await self.conn.fetchrow(
            "SELECT v.* FROM stage_transitions t JOIN model_versions v"
            " ON v.model = t.model AND v.version = t.version"
            " WHERE t.model = $1 AND t.to_stage = 'production' AND t.version <> $2"
            " ORDER BY t.id DESC LIMIT 1",
            self.deployment.model,
            self.deployment.stable_version,
        )
        return _info(row) if row else None

    async def persist(
        self, plan: dd.Plan, actor: str, token_name: str = "", on_behalf_of: str = ""
    ) -> tuple[int, dict[int, asyncpg.Record]]:
        """Applies the plan: stage moves, production pointer, deployment row, events and
        history, in that order (the event counter last). The history rows record `actor`
        (the principal), the token it authenticated with and its on-behalf-of text.
        Returns (last sequence, moved version rows by number)."""
        conn, model, after = self.conn, plan.model, plan.after
        # At most one production version per model is a unique index, checked row by row:
        # the version a promotion replaces leaves production in a statement of its own first.
        first_moves = [m for m in plan.moves if m.from_stage == Stage.PRODUCTION]
        rest: Sequence[dd.StageMove] = [m for m in plan.moves if m.from_stage != Stage.PRODUCTION]
        if first_moves and rest:
            archived: list[asyncpg.Record] = await conn.fetch(
                "UPDATE model_versions SET stage = $3, updated_at = now() WHERE model = $1 AND version = $2"
                " RETURNING *",
                model,
                first_moves[0].version,
                first_moves[0].to_stage.value,
            )
        else:
            archived, rest = [], list(plan.moves)
        rows = archived + await conn.fetch(
            _PERSIST,
            model,
            [m.version for m in rest],
            [m.to_stage.value for m in rest],
            after.stable_version or None,
            after.canary_version,
            after.canary_weight,
            after.revision,
            actor,
            plan.changed,
        )
        drafts = plan.events()
        if not drafts:
            return 0, {}
        last = await self.store.outbox.emit(conn, actor, drafts)
        first = last - len(drafts) + 1
        n_moves = len(plan.moves)  # the drafts are the moves' events, then DEPLOYMENT_CHANGED
        history = [plan] if plan.changed else []
        await conn.execute(
            "WITH t AS (INSERT INTO stage_transitions"
            " (model, version, from_stage, to_stage, actor, reason, sequence, token_name, on_behalf_of)"
            " SELECT $1, v, f, t, $2, $3, s, $13, $14"
            " FROM unnest($4::bigint[], $5::text[], $6::text[], $7::bigint[]) AS x(v, f, t, s))"
            " INSERT INTO deployment_history"
            " (model, revision, action, actor, reason, before, after, sequence, token_name, on_behalf_of)"
            " SELECT $1, rev, a, $2, $3, b::jsonb, af::jsonb, s, $13, $14"
            " FROM unnest($8::bigint[], $9::text[], $10::text[], $11::text[], $12::bigint[]) AS y(rev, a, b, af, s)",
            model,
            actor,
            plan.reason,
            [m.version for m in plan.moves],
            [m.from_stage.value for m in plan.moves],
            [m.to_stage.value for m in plan.moves],
            [first + i for i in range(n_moves)],
            [p.after.revision for p in history],
            [p.action.value for p in history],
            [json.dumps(p.before.as_dict()) for p in history],
            [json.dumps(p.after.as_dict()) for p in history],
            [first + n_moves for _ in history],
            token_name,
            on_behalf_of,
        )
        return last, {r["version"]: r for r in rows}


class DeploymentStore:
    def __init__(self, outbox: Outbox):
        self.outbox = outbox
        self.pool = outbox.pool

    def locked(self, model: str, version: int = 0) -> _Locked:
        """`async with store.locked(model) as tx`: a transaction holding the model's row
        lock, with its deployment loaded (and `version`, when given, in the same query)."""
        return _Locked(self, model, version)

    async def load(self, conn: asyncpg.Connection | asyncpg.Pool, model: str) -> dd.Deployment:
        row = await conn.fetchrow(_SELECT + " WHERE m.name = $1", model)
        if row is None:
            raise ModelNotFound(model)
        return deployment_from_row(row)

    async def get(self, model: str) -> dd.Deployment:
        return await self.load(self.pool, model)

    async def snapshot(self, models: Sequence[str] = ()) -> tuple[int, list[dd.Deployment]]:
        """The deployments of `models` that exist (of every model when empty), in name order,
        and the sequence they are valid at.

        ONE STATEMENT, so the state and the sequence come from the same MVCC snapshot: every
        change up to the sequence is reflected, none after it.
        """
        rows = await self.pool.fetch(
            "WITH q AS (SELECT last FROM event_sequence WHERE id = 1), x AS ("
            + _SELECT
            + " WHERE cardinality($1::text[]) = 0 OR m.name = ANY($1::text[]))"
            " SELECT q.last AS sequence, x.* FROM q LEFT JOIN x ON true ORDER BY x.name",
            list(models),
        )
        sequence = int(rows[0]["sequence"])
        return sequence, [deployment_from_row(r) for r in rows if r["name"] is not None]

    async def set_policy(self, model: str, policy: dd.CanaryPolicy, actor: str) -> dd.Deployment:
        async with self.outbox.transaction() as conn:
            if not await conn.fetchval("SELECT 1 FROM models WHERE name = $1 FOR UPDATE", model):
                raise ModelNotFound(model)
            await conn.execute(
                "INSERT INTO deployments (model, policy, updated_by) VALUES ($1, $2, $3)"
                " ON CONFLICT (model) DO UPDATE SET policy = EXCLUDED.policy, updated_by = EXCLUDED.updated_by,"
                " updated_at = now()",
                model,
                policy.as_dict(),
                actor,
            )
            return await self.load(conn, model)

    async def running_canaries(self) -> list[dd.Deployment]:
        """Every deployment with a running canary and an enabled policy."""
        rows = await self.pool.fetch(_SELECT + " WHERE d.canary_version > 0 AND d.policy <> '{}'::jsonb")
        return [d for d in map(deployment_from_row, rows) if d.canary is not None and d.policy.enabled]

    async def history(self, model: str, before_id: int, limit: int) -> list[tuple[int, HistoryEntry]]:
        rows = await self.pool.fetch(
            "SELECT * FROM deployment_history WHERE model = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            model,
            before_id,
            limit,
        )
        if not rows:
            await require_model(self.pool, model)
        return [
            (
                r["id"],
                HistoryEntry(
                    action=dd.Action(r["action"]),
                    actor=r["actor"],
                    reason=r["reason"],
                    before=dd.Deployment.from_dict(model, r["before"]),
                    after=dd.Deployment.from_dict(model, r["after"]),
                    sequence=r["sequence"],
                    create_time=r["created_at"],
                    token_name=r["token_name"],
                    on_behalf_of=r["on_behalf_of"],
                ),
            )
            for r in rows
        ]

    async def transitions(self, model: str, before_id: int, limit: int) -> list[tuple[int, StageTransition]]:
        rows = await self.pool.fetch(
            "SELECT * FROM stage_transitions WHERE model = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            model,
            before_id,
            limit,
        )
        if not rows:
            await require_model(self.pool, model)
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
                    token_name=r["token_name"],
                    on_behalf_of=r["on_behalf_of"],
                ),
            )
            for r in rows
        ]


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded deployment change."""

    action: dd.Action
    actor: str
    reason: str
    before: dd.Deployment
    after: dd.Deployment
    sequence: int
    create_time: datetime
    token_name: str = ""
    on_behalf_of: str = ""


class _Locked:
    def __init__(self, store: DeploymentStore, model: str, version: int):
        self.store, self.model, self.version = store, model, version
        self._tx: Any = None

    async def __aenter__(self) -> DeploymentTx:
        self._tx = self.store.outbox.transaction()
        conn = await self._tx.__aenter__()
        try:
            # Lock, then read in a statement of its own: a read that waited for the lock would
            # see the joined rows of the snapshot it started in, not the writer's it waited on.
            if not await conn.fetchval("SELECT 1 FROM models WHERE name = $1 FOR UPDATE", self.model):
                raise ModelNotFound(self.model)
            row = await conn.fetchrow(_SELECT_WITH_TARGET + " WHERE m.name = $1", self.model, self.version)
        except BaseException as e:
            await self._tx.__aexit__(type(e), e, e.__traceback__)
            raise
        d = deployment_from_row(row)
        target = _ref(row, "t")
        known = [dd.VersionInfo(target, Stage(row["t_stage"]))] if target is not None else []
        if d.canary is not None and row["c_stage"] is not None:
            known.append(dd.VersionInfo(d.canary, Stage(row["c_stage"])))
        return DeploymentTx(self.store, conn, d, row["last_version"], known)

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._tx.__aexit__(*exc)
