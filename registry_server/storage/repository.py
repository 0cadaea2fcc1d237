"""The repository: every SQL statement the registry runs, behind a small async API.

Each write runs in one transaction and appends its events to the outbox in that same
transaction (`_emit`). Locks are always taken in one order: blob advisory lock, then model
row, then version rows, then the global event counter last, so writers never deadlock and
the global counter is held only for the tail of a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from registry_server.domain.models import (
    ArtifactFormat,
    Lineage,
    Model,
    ModelVersion,
    NewVersion,
)
from registry_server.domain.stages import Stage
from registry_server.errors import (
    AlreadyExists,
    FailedPrecondition,
    ModelNotFound,
    VersionNotFound,
)
from registry_server.storage.events import NOTIFY_PAYLOAD_LIMIT

EVENTS_CHANNEL = "modelreg_events"

# Appends events under the sequence counter's row lock and NOTIFYs them, in one statement:
# the payload is the events as JSON (what `events.parse_notify_payload` reads) or, when that
# would not fit in a NOTIFY, just the last sequence.
_EMIT_SQL = """
WITH s AS (
    UPDATE event_sequence SET last = last + $1 WHERE id = 1 RETURNING last, clock_timestamp() AS at
), ins AS (
    INSERT INTO events (sequence, type, model, version, from_stage, to_stage, actor, reason, details, created_at)
    SELECT s.last - $1 + d.i, d.type, d.model, d.version, d.from_stage, d.to_stage, $9, d.reason, d.details::jsonb, s.at
    FROM s, unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[])
        WITH ORDINALITY AS d(type, model, version, from_stage, to_stage, reason, details, i)
    RETURNING sequence, type, model, version, from_stage, to_stage, actor, reason, details, created_at
), p AS (
    SELECT json_agg(json_build_array(sequence, type, model, version, from_stage, to_stage, actor, reason, details,
                                     created_at) ORDER BY sequence)::text AS body
    FROM ins
)
SELECT s.last, pg_notify($10, CASE WHEN octet_length(p.body) < $11 THEN p.body ELSE s.last::text END)
FROM s, p
"""


@dataclass(frozen=True)
class EventDraft:
    type: str
    model: str
    version: int = 0
    from_stage: str = ""
    to_stage: str = ""
    reason: str = ""
    details: dict[str, Any] | None = None


class RequestIdTaken(Exception):
    """A concurrent registration used the same request id first."""


@dataclass
class _Emitted:
    """The models and event sequences one transaction() has emitted so far."""

    models: set[str] = field(default_factory=set)
    sequences: list[int] = field(default_factory=list)


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
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def blob_lock_key(sha256: str) -> int:
    """A stable 63-bit advisory lock key for a blob."""
    return int(sha256[:15], 16)


def _model(row: asyncpg.Record) -> Model:
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


def _version(row: asyncpg.Record) -> ModelVersion:
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
    )


class Repository:
    def __init__(self, pool: asyncpg.Pool, on_change: Callable[[set[str]], None] | None = None):
        self.pool = pool
        # Called with the models a transaction emitted events for: once before commit and
        # once after it ends (the read cache drops them; see read_cache.py).
        self.on_change = on_change
        # Called after a commit with the event sequences it made durable: this process has
        # already dropped their models, so the echo from the event hub can be skipped.
        self.on_committed: Callable[[list[int]], None] | None = None
        # What each open transaction() has emitted, by connection.
        self._open: dict[int, _Emitted] = {}
        self._registrations: list[_Registration] = []
        self._registering: asyncio.Task | None = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in a transaction; reports the models it changed when it ends."""
        async with self.pool.acquire() as conn:
            emitted = self._open[id(conn)] = _Emitted()
            try:
                async with conn.transaction():
                    yield conn
                if emitted.sequences and self.on_committed is not None:
                    self.on_committed(emitted.sequences)
            finally:
                del self._open[id(conn)]
                if emitted.models and self.on_change is not None:
                    self.on_change(emitted.models)

    # ---------------------------------------------------------------- events (outbox)

    async def _emit(self, conn: asyncpg.Connection, actor: str, drafts: Sequence[EventDraft]) -> int:
        """Appends events; returns the last sequence. MUST BE THE LAST STATEMENTS OF THE
        TRANSACTION: the counter row lock is held until commit, which is what makes the
        sequence commit-ordered."""
        touched = {d.model for d in drafts}
        emitted = self._open.get(id(conn))
        if emitted is not None:
            emitted.models.update(touched)
        if self.on_change is not None:
            self.on_change(touched)
        # One round trip: the counter row lock is held from here to commit, so every
        # statement after it is time that every other writer waits.
        last = await conn.fetchval(
            _EMIT_SQL,
            len(drafts),
            [d.type for d in drafts],
            [d.model for d in drafts],
            [d.version for d in drafts],
            [d.from_stage for d in drafts],
            [d.to_stage for d in drafts],
            [d.reason for d in drafts],
            [json.dumps(d.details or {}) for d in drafts],
            actor,
            EVENTS_CHANNEL,
            NOTIFY_PAYLOAD_LIMIT,
        )
        first = last - len(drafts) + 1
        if emitted is not None:
            emitted.sequences.extend(range(first, last + 1))
        return last

    # ---------------------------------------------------------------- models

    async def create_model(self, model: Model, actor: str) -> Model:
        async with self.transaction() as conn:
            row = await self._insert_model(conn, model, actor)
            if row is None:
                raise AlreadyExists(
                    f"model 'models/{model.name}' already exists; pick another name or use "
                    f"'modelreg register {model.name} PATH' to add a version to it"
                )
            await self._emit(conn, actor, [EventDraft("MODEL_CREATED", model.name)])
            return _model(row)

    async def _insert_model(self, conn: asyncpg.Connection, model: Model, actor: str) -> asyncpg.Record | None:
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

    async def get_model(self, name: str) -> Model:
        row = await self.pool.fetchrow("SELECT * FROM models WHERE name = $1", name)
        if row is None:
            raise ModelNotFound(name)
        return _model(row)

    async def list_models(self, after: str, limit: int, project: str = "") -> list[Model]:
        if project:
            rows = await self.pool.fetch(
                "SELECT * FROM models WHERE project = $1 AND name > $2 ORDER BY name LIMIT $3",
                project,
                after,
                limit,
            )
        else:
            rows = await self.pool.fetch(
                "SELECT * FROM models WHERE name > $1 ORDER BY name LIMIT $2", after, limit
            )
        return [_model(r) for r in rows]

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
            await self._emit(
                conn, actor, [EventDraft("MODEL_UPDATED", name, details={"fields": sorted(changes)})]
            )
            return _model(row)

    async def delete_model(self, name: str, actor: str) -> tuple[int, list[str]]:
        """Deletes a model and its versions. Returns (versions deleted, blobs now unreferenced).
        The caller deletes those blobs from the store while holding their locks
        (see `blob_locks`)."""
        async with self.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT name, production_version FROM models WHERE name = $1 FOR UPDATE", name
            )
            if row is None:
                raise ModelNotFound(name)
            if row["production_version"]:
                raise FailedPrecondition(
                    f"model 'models/{name}' has version {row['production_version']} in production; "
                    f"archive it first ('modelreg promote {name} {row['production_version']} archived') "
                    "and then delete the model"
                )
            shas = [
                r["sha256"]
                for r in await conn.fetch(
                    "DELETE FROM model_versions WHERE model = $1 RETURNING sha256", name
                )
            ]
            await conn.execute("DELETE FROM models WHERE name = $1", name)
            orphans = await self._drop_unreferenced_blobs(conn, set(shas))
            await self._emit(
                conn, actor, [EventDraft("MODEL_DELETED", name, details={"versions": len(shas)})]
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
        return _version(row) if row else None

    async def ensure_model(self, name: str, model_type: str, actor: str) -> Model:
        """Gets a model, creating it (with an event) when missing."""
        row = await self.pool.fetchrow("SELECT * FROM models WHERE name = $1", name)
        if row is not None:
            return _model(row)
        async with self.transaction() as conn:
            row = await self._insert_model(conn, Model(name=name, model_type=model_type), actor)
            if row is None:  # created concurrently
                row = await conn.fetchrow("SELECT * FROM models WHERE name = $1", name)
                return _model(row)
            await self._emit(conn, actor, [EventDraft("MODEL_CREATED", name)])
            return _model(row)

    async def register_version(
        self,
        nv: NewVersion,
        config: dict[str, Any],
        model_type: str,
        sha256: str,
        size: int,
        actor: str,
        finalize: Callable[[], Awaitable[None]],
    ) -> ModelVersion:
        """Creates a READY version. `finalize` moves the verified bytes under their final
        key; it runs inside the transaction while the blob's advisory lock is held, so a
        concurrent delete of the same blob cannot interleave.
        Raises RequestIdTaken when the request id was used by a concurrent registration.

        Group commit: registrations that arrive while one is committing wait and then go
        into the database together, in one transaction (each in its own savepoint, so one
        failing does not fail the others). The model row and the event counter are locked
        until commit, so one commit per registration would serialize every registration
        of a model on a WAL flush; one per batch amortizes it."""
        item = _Registration(nv, config, model_type, sha256, size, actor, finalize)
        self._registrations.append(item)
        if self._registering is None or self._registering.done():
            self._registering = asyncio.create_task(self._register_pending(), name="modelreg-register")
        return await item.done

    async def _register_pending(self) -> None:
        """Commits the waiting registrations, a batch at a time, until none wait."""
        while self._registrations:
            batch = [i for i in self._registrations[:MAX_REGISTRATION_BATCH] if not i.done.done()]
            del self._registrations[:MAX_REGISTRATION_BATCH]
            if not batch:
                continue
            try:
                results = await self._register_batch(batch)
            except asyncio.CancelledError:
                for i in batch:
                    i.done.cancel()
                raise
            except Exception as e:  # noqa: BLE001 - the transaction failed: every item did
                for i in batch:
                    if not i.done.done():
                        i.done.set_exception(e)
                continue
            for i, r in zip(batch, results):
                if i.done.done():
                    continue
                if isinstance(r, BaseException):
                    i.done.set_exception(r)
                else:
                    i.done.set_result(r)

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
                for item, failed in zip(batch, finalized):
                    if failed is not None:
                        results.append(failed)
                        continue
                    try:
                        async with conn.transaction():  # a savepoint
                            results.append(await self._insert_version(conn, item))
                    except Exception as e:  # noqa: BLE001 - this registration failed, not the batch
                        results.append(e)
            done = [(i, r) for i, r in zip(batch, results) if not isinstance(r, BaseException)]
            for actor in dict.fromkeys(i.actor for i, _ in done):
                await self._emit(
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
                " tags, description, created_by, sha256, size_bytes, filename, request_id)"
                " SELECT $1, n.last_version, $2::text, $3::text, $4::jsonb, $5::jsonb, $6::jsonb, $7::text,"
                " $8::text, $9::bigint, $10::text, $11::text, $12::jsonb, $13::text, $14::text, $15::text,"
                " $16::bigint, $17::text, $18::text FROM n RETURNING *",
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
            )
        except asyncpg.UniqueViolationError as e:
            # Rolls back this registration (its savepoint or transaction), version counter
            # included: no gap.
            raise RequestIdTaken() from e
        if row is None:
            raise ModelNotFound(nv.model)
        return _version(row)

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
        if isinstance(ref, int):
            row = await self.pool.fetchrow(
                "SELECT * FROM model_versions WHERE model = $1 AND version = $2", model, ref
            )
        elif ref == "production":
            row = await self.pool.fetchrow(
                "SELECT v.* FROM models m JOIN model_versions v"
                " ON v.model = m.name AND v.version = m.production_version WHERE m.name = $1",
                model,
            )
        elif ref == "staging":
            row = await self.pool.fetchrow(
                "SELECT * FROM model_versions WHERE model = $1 AND stage = 'staging'"
                " ORDER BY version DESC LIMIT 1",
                model,
            )
        else:  # latest
            row = await self.pool.fetchrow(
                "SELECT * FROM model_versions WHERE model = $1 ORDER BY version DESC LIMIT 1", model
            )
        if row is None:
            await self.require_model(model)
            if isinstance(ref, str):
                what = {"production": "in production", "staging": "in staging", "latest": "registered"}[ref]
                raise _no_alias(model, ref, what)
            raise VersionNotFound(model, ref)
        return _version(row)

    async def list_versions(
        self, model: str, stage: Stage | None, before: int, limit: int
    ) -> list[ModelVersion]:
        if stage is None:
            rows = await self.pool.fetch(
                "SELECT * FROM model_versions WHERE model = $1 AND version < $2"
                " ORDER BY version DESC LIMIT $3",
                model,
                before,
                limit,
            )
        else:
            rows = await self.pool.fetch(
                "SELECT * FROM model_versions WHERE model = $1 AND stage = $2 AND version < $3"
                " ORDER BY version DESC LIMIT $4",
                model,
                stage.value,
                before,
                limit,
            )
        if not rows:
            await self.require_model(model)
        return [_version(r) for r in rows]

    async def get_versions(self, model: str, numbers: Sequence[int]) -> list[ModelVersion]:
        rows = await self.pool.fetch(
            "SELECT * FROM model_versions WHERE model = $1 AND version = ANY($2::bigint[])",
            model,
            list(numbers),
        )
        return [_version(r) for r in rows]

    async def update_version(
        self, model: str, version: int, changes: dict[str, Any], actor: str
    ) -> ModelVersion:
        assert set(changes) <= {"description", "tags"}, changes
        async with self.transaction() as conn:
            sets = ", ".join(f"{k} = ${i + 3}" for i, k in enumerate(changes))
            row = await conn.fetchrow(
                f"UPDATE model_versions SET {sets}{',' if sets else ''} updated_at = now()"
                " WHERE model = $1 AND version = $2 RETURNING *",
                model,
                version,
                *changes.values(),
            )
            if row is None:
                await self._raise_missing(conn, model, version)
            await self._emit(
                conn,
                actor,
                [EventDraft("VERSION_UPDATED", model, version, details={"fields": sorted(changes)})],
            )
            return _version(row)

    async def delete_version(self, model: str, version: int, actor: str) -> list[str]:
        """Deletes a version; returns the blobs it left unreferenced."""
        async with self.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT stage, sha256 FROM model_versions WHERE model = $1 AND version = $2 FOR UPDATE",
                model,
                version,
            )
            if row is None:
                await self._raise_missing(conn, model, version)
            if row["stage"] == Stage.PRODUCTION.value:
                raise FailedPrecondition(
                    f"models/{model}/versions/{version} is in production; promote another version "
                    f"or archive it ('modelreg promote {model} {version} archived') before deleting it"
                )
            await conn.execute(
                "DELETE FROM model_versions WHERE model = $1 AND version = $2", model, version
            )
            orphans = await self._drop_unreferenced_blobs(conn, {row["sha256"]})
            await self._emit(
                conn, actor, [EventDraft("VERSION_DELETED", model, version, details={"sha256": row["sha256"]})]
            )
            return orphans

    async def require_model(self, model: str, conn: asyncpg.Connection | None = None) -> None:
        """Raises ModelNotFound unless the model exists (the error for an empty result)."""
        if not await (conn or self.pool).fetchval("SELECT 1 FROM models WHERE name = $1", model):
            raise ModelNotFound(model)

    async def _raise_missing(self, conn: asyncpg.Connection, model: str, version: int) -> None:
        await self.require_model(model, conn)
        raise VersionNotFound(model, version)


def _no_alias(model: str, alias: str, what: str) -> VersionNotFound:
    err = VersionNotFound(model, alias)
    err.message = (
        f"model 'models/{model}' has no version {what}; "
        f"list versions with 'modelreg list {model}'"
    )
    err.args = (err.message,)
    return err
