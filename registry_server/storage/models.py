"""Models and versions in Postgres: every SQL statement about them, behind a small async API,
and the public row mappers other storage modules use.

Each write runs in one outbox transaction and appends its events in that same transaction.
Locks are always taken in one order: blob advisory lock, then model row, then version rows,
then the global event counter last, so writers never deadlock and the global counter is held
only for the tail of a transaction. This module decides nothing: the use cases ask the domain
whether a write is allowed, then call it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from registry_server.domain.aliases import alias_not_found
from registry_server.domain.events import EventDraft
from registry_server.domain.models import (
    ArtifactFormat,
    Lineage,
    Model,
    ModelVersion,
    NewVersion,
)
from registry_server.domain.signatures import Signature
from registry_server.domain.stages import Stage
from registry_server.errors import AlreadyExists, ModelNotFound, NotFound, VersionNotFound
from registry_server.storage.group_commit import GroupCommit
from registry_server.storage.outbox import Outbox


class RequestIdTaken(Exception):
    """A concurrent registration used the same request id first."""


# Registrations committed together at most (see Repository.register_version).
MAX_REGISTRATION_BATCH = 32


@dataclass
class _Registration:
    nv: NewVersion
    config: dict[str, Any]
    model_type: str
    sha256: str
    size: int
    actor: str
    finalize: Callable[[], Awaitable[None]]
    signature: Signature | None = None


def blob_lock_key(sha256: str) -> int:
    """A stable 63-bit advisory lock key for a blob."""
    return int(sha256[:15], 16)


def model_from_row(row: asyncpg.Record) -> Model:
    return Model(
        name=row["name"],
        description=row["description"],
        project=row["project"],
        model_type=row["model_type"],
        default_config=row["default_config"],
        tags=row["tags"],
        production_version=row["production_version"] or 0,
        latest_version=row["last_version"],
        created_by=row["created_by"],
        create_time=row["created_at"],
        update_time=row["updated_at"],
    )


def version_from_row(row: asyncpg.Record) -> ModelVersion:
    return ModelVersion(
        model=row["model"],
        version=row["version"],
        stage=Stage(row["stage"]),
        format=ArtifactFormat(row["format"]),
        model_type=row["model_type"],
        config=row["config"],
        metrics=row["metrics"],
        metric_history={k: [tuple(p) for p in v] for k, v in row["metric_history"].items()},
        lineage=Lineage(
            dataset_id=row["dataset_id"],
            dataset_hash=row["dataset_hash"],
            parent_version=row["parent_version"],
            run_id=row["run_id"],
            code_revision=row["code_revision"],
        ),
        tags=row["tags"],
        description=row["description"],
        created_by=row["created_by"],
        create_time=row["created_at"],
        update_time=row["updated_at"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        filename=row["filename"],
        request_id=row["request_id"] or "",
        aliases=tuple(row.get("aliases") or ()),
        signature=Signature.from_dict(row["signature"]) if row.get("signature") else None,
    )


# The named aliases of version row `v`, for reads that return versions to callers: one probe
# of the index model_aliases_version per row.
WITH_ALIASES = (
    "v.*, (SELECT coalesce(array_agg(a.alias ORDER BY a.alias), '{}') FROM model_aliases a"
    " WHERE a.model = v.model AND a.version = v.version) AS aliases"
)


class ModelStore:
    def __init__(self, outbox: Outbox, on_batch: Callable[[int], None] | None = None):
        self.outbox = outbox
        self.pool = outbox.pool
        self.transaction = outbox.transaction
        self._registrations: GroupCommit[_Registration, ModelVersion] = GroupCommit(
            self._register_batch, MAX_REGISTRATION_BATCH, name="modelreg-register", on_batch=on_batch
        )

    # ---------------------------------------------------------------- models

    async def create_model(self, model: Model, actor: str, create_project: bool = False) -> Model:
        """Creates a model in `model.project`, which must exist unless `create_project` (auth
        off: a project is created on first use)."""
        async with self.transaction() as conn:
            row = await self._insert_model(conn, model, actor, create_project)
            if row is None:
                raise AlreadyExists(
                    f"model 'models/{model.name}' already exists; pick another name or use "
                    f"'modelreg register {model.name} PATH' to add a version to it"
                )
            await self.outbox.emit(conn, actor, [EventDraft("MODEL_CREATED", model.name)])
            return model_from_row(row)

    async def _insert_model(
        self, conn: asyncpg.Connection, model: Model, actor: str, create_project: bool
    ) -> asyncpg.Record | None:
        if create_project:
            await conn.execute(
                "INSERT INTO projects (name, created_by) VALUES ($1, $2) ON CONFLICT DO NOTHING", model.project, actor
            )
        try:
            async with conn.transaction():
                return await conn.fetchrow(
                    "INSERT INTO models (name, description, project, model_type, default_config, tags, created_by)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING RETURNING *",
                    model.name,
                    model.description,
                    model.project,
                    model.model_type,
                    model.default_config,
                    model.tags,
                    actor,
                )
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(
                f"project {model.project!r} does not exist; an admin creates it with "
                f"'modelreg projects create {model.project}', or use an existing project"
            ) from None

    async def get_model(self, name: str) -> Model:
        row = await self.pool.fetchrow("SELECT * FROM models WHERE name = $1", name)
        if row is None:
            raise ModelNotFound(name)
        return model_from_row(row)

    async def list_models(
        self, after: str, limit: int, project: str = "", within: frozenset[str] | None = None
    ) -> list[Model]:
        """Models after `after` in name order: of `project` when set, and only of the
        projects in `within` when it is not None (what the caller may read)."""
        rows = await self.pool.fetch(
            "SELECT * FROM models WHERE name > $1 AND ($2 = '' OR project = $2)"
            " AND ($3::text[] IS NULL OR project = ANY($3)) ORDER BY name LIMIT $4",
            after,
            project,
            sorted(within) if within is not None else None,
            limit,
        )
        return [model_from_row(r) for r in rows]

    async def update_model(self, name: str, changes: dict[str, Any], actor: str) -> Model:
        allowed = {"description", "tags", "default_config", "model_type"}
        assert set(changes) <= allowed, changes
        async with self.transaction() as conn:
            sets = ", ".join(f"{k} = ${i + 2}" for i, k in enumerate(changes))
            row = await conn.fetchrow(
                f"UPDATE models SET {sets}{',' if sets else ''} updated_at = now() WHERE name = $1 RETURNING *",
                name,
                *changes.values(),
            )
            if row is None:
                raise ModelNotFound(name)
            await self.outbox.emit(
                conn, actor, [EventDraft("MODEL_UPDATED", name, details={"fields": sorted(changes)})]
            )
            return model_from_row(row)

    async def lock_model(self, conn: asyncpg.Connection, name: str) -> Model:
        """The model, its row locked to the end of `conn`'s transaction."""
        row = await conn.fetchrow("SELECT * FROM models WHERE name = $1 FOR UPDATE", name)
        if row is None:
            raise ModelNotFound(name)
        return model_from_row(row)

    async def delete_model(self, conn: asyncpg.Connection, name: str, actor: str) -> tuple[int, list[str]]:
        """Deletes a locked model and its versions. Returns (versions deleted, blobs now
        unreferenced); the caller deletes those blobs from the store while holding their
        locks (see `blob_lock`)."""
        # Its aliases first: they reference its versions (their history goes with the model).
        await conn.execute(
            "WITH h AS (DELETE FROM alias_history WHERE model = $1) DELETE FROM model_aliases WHERE model = $1", name
        )
        shas = [
            r["sha256"] for r in await conn.fetch("DELETE FROM model_versions WHERE model = $1 RETURNING sha256", name)
        ]
        project = await conn.fetchval("DELETE FROM models WHERE name = $1 RETURNING project", name)
        orphans = await self._drop_unreferenced_blobs(conn, set(shas))
        await self.outbox.emit(
            conn, actor, [EventDraft("MODEL_DELETED", name, details={"versions": len(shas)}, project=project or "")]
        )
        return len(shas), orphans

    async def _drop_unreferenced_blobs(self, conn: asyncpg.Connection, shas: set[str]) -> list[str]:
        if not shas:
            return []
        rows = await conn.fetch(
            "DELETE FROM blobs b WHERE b.sha256 = ANY($1::text[])"
            " AND NOT EXISTS (SELECT 1 FROM model_versions v WHERE v.sha256 = b.sha256)"
            " RETURNING sha256",
            list(shas),
        )
        return [r["sha256"] for r in rows]

    # ---------------------------------------------------------------- versions

    async def find_by_request_id(self, model: str, request_id: str) -> ModelVersion | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM model_versions WHERE model = $1 AND request_id = $2", model, request_id
        )
        return version_from_row(row) if row else None

    async def ensure_model(
        self, name: str, model_type: str, actor: str, project: str, create_project: bool = False
    ) -> Model:
        """Gets a model, creating it (with an event) in `project` when missing."""
        row = await self.pool.fetchrow("SELECT * FROM models WHERE name = $1", name)
        if row is not None:
            return model_from_row(row)
        async with self.transaction() as conn:
            row = await self._insert_model(
                conn, Model(name=name, model_type=model_type, project=project), actor, create_project
            )
            if row is None:  # created concurrently
                row = await conn.fetchrow("SELECT * FROM models WHERE name = $1", name)
                return model_from_row(row)
            await self.outbox.emit(conn, actor, [EventDraft("MODEL_CREATED", name)])
            return model_from_row(row)

    async def register_version(
        self,
        nv: NewVersion,
        config: dict[str, Any],
        model_type: str,
        sha256: str,
        size: int,
        actor: str,
        finalize: Callable[[], Awaitable[None]],
        signature: Signature | None = None,
    ) -> ModelVersion:
        """Creates a READY version (with `signature`, when known). `finalize` moves the verified bytes under their final
        key; it runs inside the transaction while the blob's advisory lock is held, so a
        concurrent delete of the same blob cannot interleave.
        Raises RequestIdTaken when the request id was used by a concurrent registration.

        Group commit: registrations that arrive while one is committing wait and then go
        into the database together, in one transaction (each in its own savepoint, so one
        failing does not fail the others). The model row and the event counter are locked
        until commit, so one commit per registration would serialize every registration
        of a model on a WAL flush; one per batch amortizes it."""
        return await self._registrations.submit(
            _Registration(nv, config, model_type, sha256, size, actor, finalize, signature)
        )

    async def _register_batch(self, batch: list[_Registration]) -> list[ModelVersion | BaseException]:
        alone = len(batch) == 1
        results: list[ModelVersion | BaseException] = []
        async with self.transaction() as conn:
            # Lock order: every blob first (sorted, so two batches cannot deadlock), then
            # the models, then the event counter.
            keys = sorted({blob_lock_key(i.sha256) for i in batch})
            await conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k", keys)
            if alone:
                await batch[0].finalize()
                results.append(await self._insert_version(conn, batch[0]))
            else:
                # The bytes of every registration go under their final keys at once (each
                # store commit waits on a disk flush or an S3 round trip), then the rows.
                finalized = await asyncio.gather(*(i.finalize() for i in batch), return_exceptions=True)
                for item, failed in zip(batch, finalized, strict=True):
                    if failed is not None:
                        results.append(failed)
                        continue
                    try:
                        async with conn.transaction():  # a savepoint
                            results.append(await self._insert_version(conn, item))
                    except Exception as e:  # noqa: BLE001 - this registration failed, not the batch
                        results.append(e)
            done = [(i, r) for i, r in zip(batch, results, strict=True) if not isinstance(r, BaseException)]
            for actor in dict.fromkeys(i.actor for i, _ in done):
                await self.outbox.emit(
                    conn,
                    actor,
                    [
                        EventDraft(
                            "VERSION_READY",
                            v.model,
                            v.version,
                            details={"sha256": v.sha256, "size_bytes": v.size_bytes, "format": v.format.value},
                        )
                        for i, v in done
                        if i.actor == actor
                    ],
                )
        return results

    async def _insert_version(self, conn: asyncpg.Connection, item: _Registration) -> ModelVersion:
        """The version row of a registration whose bytes are already under their final key."""
        nv, sha256, size = item.nv, item.sha256, item.size
        # The model row lock taken here is held to commit; the blob row, the next number
        # and the version row go in one round trip.
        try:
            row = await conn.fetchrow(
                "WITH b AS (INSERT INTO blobs (sha256, size_bytes) VALUES ($15, $16) ON CONFLICT (sha256) DO NOTHING),"
                " n AS (UPDATE models SET last_version = last_version + 1, updated_at = now()"
                " WHERE name = $1 RETURNING last_version)"
                " INSERT INTO model_versions (model, version, format, model_type, config, metrics,"
                " metric_history, dataset_id, dataset_hash, parent_version, run_id, code_revision,"
                " tags, description, created_by, sha256, size_bytes, filename, request_id, signature)"
                " SELECT $1, n.last_version, $2::text, $3::text, $4::jsonb, $5::jsonb, $6::jsonb, $7::text,"
                " $8::text, $9::bigint, $10::text, $11::text, $12::jsonb, $13::text, $14::text, $15::text,"
                " $16::bigint, $17::text, $18::text, $19::jsonb FROM n RETURNING *",
                nv.model,
                nv.format.value,
                item.model_type,
                item.config,
                nv.metrics,
                {k: [list(p) for p in v] for k, v in nv.metric_history.items()},
                nv.lineage.dataset_id,
                nv.lineage.dataset_hash,
                nv.lineage.parent_version,
                nv.lineage.run_id,
                nv.lineage.code_revision,
                nv.tags,
                nv.description,
                item.actor,
                sha256,
                size,
                nv.filename,
                nv.request_id or None,
                item.signature.as_dict() if item.signature is not None else None,
            )
        except asyncpg.UniqueViolationError as e:
            # Rolls back this registration (its savepoint or transaction), version counter
            # included: no gap.
            raise RequestIdTaken() from e
        if row is None:
            raise ModelNotFound(nv.model)
        return version_from_row(row)

    @contextlib.asynccontextmanager
    async def blob_lock(self, sha256: str) -> AsyncIterator[bool]:
        """Holds the blob's advisory lock; yields whether any version references the blob."""
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", blob_lock_key(sha256))
            try:
                yield bool(await conn.fetchval("SELECT 1 FROM blobs WHERE sha256 = $1", sha256))
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", blob_lock_key(sha256))

    async def get_version(self, model: str, ref: int | str) -> ModelVersion:
        """A version by number, stage alias (production, staging, latest) or named alias,
        with its named aliases. Numbers and stage aliases are tried first (the hot path);
        any other string is a named alias."""
        if isinstance(ref, int):
            row = await self.pool.fetchrow(
                f"SELECT {WITH_ALIASES} FROM model_versions v WHERE v.model = $1 AND v.version = $2", model, ref
            )
        elif ref == "production":
            row = await self.pool.fetchrow(
                f"SELECT {WITH_ALIASES} FROM models m JOIN model_versions v"
                " ON v.model = m.name AND v.version = m.production_version WHERE m.name = $1",
                model,
            )
        elif ref == "staging":
            row = await self.pool.fetchrow(
                f"SELECT {WITH_ALIASES} FROM model_versions v WHERE v.model = $1 AND v.stage = 'staging'"
                " ORDER BY v.version DESC LIMIT 1",
                model,
            )
        elif ref == "latest":
            row = await self.pool.fetchrow(
                f"SELECT {WITH_ALIASES} FROM model_versions v WHERE v.model = $1 ORDER BY v.version DESC LIMIT 1",
                model,
            )
        else:  # a named alias
            row = await self.pool.fetchrow(
                f"SELECT {WITH_ALIASES} FROM model_aliases n JOIN model_versions v"
                " ON v.model = n.model AND v.version = n.version WHERE n.model = $1 AND n.alias = $2",
                model,
                ref,
            )
        if row is None:
            await self.require_model(model)
            if isinstance(ref, str):
                stage = {"production": "in production", "staging": "in staging", "latest": "registered"}.get(ref)
                if stage is None:
                    raise alias_not_found(model, ref)
                raise no_alias(model, ref, stage)
            raise VersionNotFound(model, ref)
        return version_from_row(row)

    async def list_versions(self, model: str, stage: Stage | None, before: int, limit: int) -> list[ModelVersion]:
        if stage is None:
            rows = await self.pool.fetch(
                f"SELECT {WITH_ALIASES} FROM model_versions v WHERE v.model = $1 AND v.version < $2"
                " ORDER BY v.version DESC LIMIT $3",
                model,
                before,
                limit,
            )
        else:
            rows = await self.pool.fetch(
                f"SELECT {WITH_ALIASES} FROM model_versions v WHERE v.model = $1 AND v.stage = $2 AND v.version < $3"
                " ORDER BY v.version DESC LIMIT $4",
                model,
                stage.value,
                before,
                limit,
            )
        if not rows:
            await self.require_model(model)
        return [version_from_row(r) for r in rows]

    async def get_versions(self, model: str, numbers: Sequence[int]) -> list[ModelVersion]:
        rows = await self.pool.fetch(
            "SELECT * FROM model_versions WHERE model = $1 AND version = ANY($2::bigint[])",
            model,
            list(numbers),
        )
        return [version_from_row(r) for r in rows]

    async def update_version(self, model: str, version: int, changes: dict[str, Any], actor: str) -> ModelVersion:
        assert set(changes) <= {"description", "tags"}, changes
        async with self.transaction() as conn:
            sets = ", ".join(f"{k} = ${i + 3}" for i, k in enumerate(changes))
            row = await conn.fetchrow(
                f"UPDATE model_versions v SET {sets}{',' if sets else ''} updated_at = now()"
                f" WHERE v.model = $1 AND v.version = $2 RETURNING {WITH_ALIASES}",
                model,
                version,
                *changes.values(),
            )
            if row is None:
                await self._raise_missing(conn, model, version)
            await self.outbox.emit(
                conn,
                actor,
                [EventDraft("VERSION_UPDATED", model, version, details={"fields": sorted(changes)})],
            )
            return version_from_row(row)

    async def set_signature_once(self, model: str, version: int, sha256: str, signature: Signature, actor: str) -> bool:
        """Stores `signature` on a version that has none and whose artifact is `sha256`, with
        a VERSION_UPDATED event (fields ["signature"]) by `actor`; False (nothing written)
        when the version has one already, is gone, or holds other bytes."""
        async with self.transaction() as conn:
            row = await conn.fetchrow(
                "UPDATE model_versions SET signature = $4::jsonb, updated_at = now()"
                " WHERE model = $1 AND version = $2 AND sha256 = $3 AND signature IS NULL RETURNING version",
                model,
                version,
                sha256,
                signature.as_dict(),
            )
            if row is None:
                return False
            await self.outbox.emit(
                conn, actor, [EventDraft("VERSION_UPDATED", model, version, details={"fields": ["signature"]})]
            )
            return True

    async def lock_version(self, conn: asyncpg.Connection, model: str, version: int) -> ModelVersion:
        """The version, its row locked to the end of `conn`'s transaction."""
        row = await conn.fetchrow(
            "SELECT * FROM model_versions WHERE model = $1 AND version = $2 FOR UPDATE", model, version
        )
        if row is None:
            await self._raise_missing(conn, model, version)
        return version_from_row(row)

    async def delete_version(self, conn: asyncpg.Connection, v: ModelVersion, actor: str) -> list[str]:
        """Deletes a locked version; returns the blobs it left unreferenced."""
        await conn.execute("DELETE FROM model_versions WHERE model = $1 AND version = $2", v.model, v.version)
        orphans = await self._drop_unreferenced_blobs(conn, {v.sha256})
        await self.outbox.emit(
            conn, actor, [EventDraft("VERSION_DELETED", v.model, v.version, details={"sha256": v.sha256})]
        )
        return orphans

    async def require_model(self, model: str, conn: asyncpg.Connection | None = None) -> None:
        await require_model(conn or self.pool, model)

    async def _raise_missing(self, conn: asyncpg.Connection, model: str, version: int) -> None:
        await self.require_model(model, conn)
        raise VersionNotFound(model, version)


async def require_model(conn: asyncpg.Pool | asyncpg.Connection, model: str) -> None:
    """Raises ModelNotFound unless the model exists (the error for an empty result)."""
    if not await conn.fetchval("SELECT 1 FROM models WHERE name = $1", model):
        raise ModelNotFound(model)


def no_alias(model: str, alias: str, what: str) -> VersionNotFound:
    err = VersionNotFound(model, alias)
    err.message = f"model 'models/{model}' has no version {what}; list versions with 'modelreg list {model}'"
    err.args = (err.message,)
    return err
