"""Named aliases in Postgres (tables model_aliases and alias_history, migration 0005): every
SQL statement about them. It decides nothing: the use case asks domain/aliases.py.

Lock order, as everywhere (storage/models.py): the model row, then version rows, then the
event counter last. A change holds the model's row lock, so it cannot interleave with a
version deletion (which takes the same lock) or with another change of the model's aliases.
"""

from __future__ import annotations

import asyncpg

from registry_server.domain.aliases import Alias, AliasChange, AliasPlan
from registry_server.domain.models import ModelVersion
from registry_server.errors import ModelNotFound, VersionNotFound
from registry_server.storage.models import require_model, version_from_row
from registry_server.storage.outbox import Outbox


def alias_from_row(row: asyncpg.Record) -> Alias:
    return Alias(
        model=row["model"],
        alias=row["alias"],
        version=row["version"],
        protected=row["protected"],
        updated_by=row["updated_by"],
        update_time=row["updated_at"],
    )


class AliasStore:
    def __init__(self, outbox: Outbox):
        self.outbox = outbox
        self.pool = outbox.pool
        self.transaction = outbox.transaction

    async def lock(self, conn: asyncpg.Connection, model: str, alias: str) -> Alias | None:
        """Locks the model's row (ModelNotFound when missing), then returns the alias or None.
        Two statements ON PURPOSE: under READ COMMITTED a statement that waited for the lock
        re-checks only the locked row, and a row it joined would be the one its snapshot saw
        before the other writer committed (a stale alias, two moves from the same version)."""
        if await conn.fetchval("SELECT 1 FROM models WHERE name = $1 FOR UPDATE", model) is None:
            raise ModelNotFound(model)
        row = await conn.fetchrow("SELECT * FROM model_aliases WHERE model = $1 AND alias = $2", model, alias)
        return alias_from_row(row) if row is not None else None

    async def version(self, conn: asyncpg.Connection, model: str, version: int) -> ModelVersion:
        """The version an alias is about to point at (the model row is locked already, so it
        cannot be deleted before commit)."""
        row = await conn.fetchrow("SELECT * FROM model_versions WHERE model = $1 AND version = $2", model, version)
        if row is None:
            raise VersionNotFound(model, version)
        return version_from_row(row)

    async def persist(self, conn: asyncpg.Connection, plan: AliasPlan, actor: str) -> tuple[int, Alias | None]:
        """Applies a changed plan: the alias row, the event (the counter lock from here to
        commit), then its history row. Returns (sequence, the row after)."""
        after: Alias | None = None
        if plan.after is not None:
            a = plan.after
            row = await conn.fetchrow(
                "INSERT INTO model_aliases (model, alias, version, protected, updated_by) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (model, alias) DO UPDATE SET version = EXCLUDED.version,"
                " protected = EXCLUDED.protected, updated_by = EXCLUDED.updated_by, updated_at = now()"
                " RETURNING *",
                a.model,
                a.alias,
                a.version,
                a.protected,
                actor,
            )
            after = alias_from_row(row)
        else:
            assert plan.before is not None
            await conn.execute(
                "DELETE FROM model_aliases WHERE model = $1 AND alias = $2", plan.before.model, plan.before.alias
            )
        draft = plan.event()
        sequence = await self.outbox.emit(conn, actor, [draft])
        await conn.execute(
            "INSERT INTO alias_history (model, alias, from_version, to_version, actor, reason, sequence)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            draft.model,
            draft.details["alias"] if draft.details else "",
            plan.from_version,
            plan.to_version,
            actor,
            plan.reason,
            sequence,
        )
        return sequence, after

    async def list_aliases(self, model: str) -> list[Alias]:
        rows = await self.pool.fetch("SELECT * FROM model_aliases WHERE model = $1 ORDER BY alias", model)
        if not rows:
            await require_model(self.pool, model)
        return [alias_from_row(r) for r in rows]

    async def history(self, model: str, alias: str, before_id: int, limit: int) -> list[tuple[int, AliasChange]]:
        """Moves newest first, of `alias` when set, with ids below `before_id`."""
        rows = await self.pool.fetch(
            "SELECT * FROM alias_history WHERE model = $1 AND ($2 = '' OR alias = $2) AND id < $3"
            " ORDER BY id DESC LIMIT $4",
            model,
            alias,
            before_id,
            limit,
        )
        if not rows:
            await require_model(self.pool, model)
        return [
            (
                r["id"],
                AliasChange(
                    model=r["model"],
                    alias=r["alias"],
                    from_version=r["from_version"],
                    to_version=r["to_version"],
                    actor=r["actor"],
                    reason=r["reason"],
                    create_time=r["created_at"],
                    sequence=r["sequence"],
                ),
            )
            for r in rows
        ]


async def aliases_of(conn: asyncpg.Connection, model: str, version: int) -> list[str]:
    """The aliases that point at a version, by name."""
    rows = await conn.fetch(
        "SELECT alias FROM model_aliases WHERE model = $1 AND version = $2 ORDER BY alias", model, version
    )
    return [r["alias"] for r in rows]
