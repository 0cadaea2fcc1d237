"""The outbox: events appended in the same transaction as the change they describe, and the
NOTIFY that wakes every replica's event hub.

Sequences are assigned under the `event_sequence` row lock, held until commit, so they are
gap-free and commit-ordered: a reader that has seen `n` never later finds a committed event
below `n`. `emit` MUST BE THE LAST STATEMENTS OF ITS TRANSACTION (the counter lock is held
from there to commit, and every other writer waits on it).

The NOTIFY payload is written here (`_EMIT_SQL`) and parsed here (`parse_notify_payload`):
the events themselves as JSON when they fit in a NOTIFY, else just the last sequence (the
hub then reads the table).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from modelreg_runtime import tracing
from registry_server.domain.events import EventDraft
from registry_server.storage.events import EventRow

EVENTS_CHANNEL = "modelreg_events"
_DB = {"db.system": "postgresql"}
# Postgres refuses NOTIFY payloads of 8000 bytes or more; larger batches NOTIFY just the
# last sequence.
NOTIFY_PAYLOAD_LIMIT = 7900

# Appends events under the sequence counter's row lock and NOTIFYs them, in one statement.
_EMIT_SQL = """
WITH s AS (
    UPDATE event_sequence SET last = last + $1 WHERE id = 1 RETURNING last, clock_timestamp() AS at
), ins AS (
    INSERT INTO events (sequence, type, model, version, from_stage, to_stage, actor, reason, details, created_at,
                        project)
    SELECT s.last - $1 + d.i, d.type, d.model, d.version, d.from_stage, d.to_stage, $9, d.reason,
           d.details::jsonb, s.at,
           COALESCE(NULLIF(d.project, ''), (SELECT m.project FROM models m WHERE m.name = d.model AND d.model <> ''))
    FROM s, unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $12::text[])
        WITH ORDINALITY AS d(type, model, version, from_stage, to_stage, reason, details, project, i)
    RETURNING sequence, type, model, version, from_stage, to_stage, actor, reason, details, created_at, project
), p AS (
    SELECT json_agg(json_build_array(sequence, type, model, version, from_stage, to_stage, actor, reason, details,
                                     created_at, project) ORDER BY sequence)::text AS body
    FROM ins
)
SELECT s.last, pg_notify($10, CASE WHEN octet_length(p.body) < $11 THEN p.body ELSE s.last::text END)
FROM s, p
"""


def parse_notify_payload(payload: str) -> list[EventRow] | None:
    """The events a NOTIFY carries (a JSON array of `[sequence, type, model, version,
    from_stage, to_stage, actor, reason, details, created_at, project]`), or None when it
    carries only a sequence (or is not ours to understand)."""
    if not payload.startswith("["):
        return None
    try:
        return [
            EventRow(int(q), t, m, int(v), f, to, a, reason, d or {}, datetime.fromisoformat(at), project)
            for q, t, m, v, f, to, a, reason, d, at, project in json.loads(payload)
        ]
    except (ValueError, TypeError):
        return None


@dataclass
class _Emitted:
    """The models and event sequences one transaction has emitted so far."""

    models: set[str] = field(default_factory=set)
    sequences: list[int] = field(default_factory=list)


class Outbox:
    """Transactions that emit events, and the hooks the read cache hangs on them."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        # Called with the models a transaction emitted events for: once before commit and
        # once after it ends (the read cache drops them; see read_cache.py).
        self.on_change: Callable[[set[str]], None] | None = None
        # Called after a commit with the event sequences it made durable: this process has
        # already dropped their models, so the echo from the event hub can be skipped.
        self.on_committed: Callable[[list[int]], None] | None = None
        self._open: dict[int, _Emitted] = {}  # by connection

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in a transaction; reports the models it changed when it ends.
        Traced as a `postgres.transaction` span (connection wait included) when tracing is on."""
        with tracing.span("postgres.transaction", _DB):
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

    async def emit(self, conn: asyncpg.Connection, actor: str, drafts: Sequence[EventDraft]) -> int:
        """Appends events; returns the last sequence. MUST BE THE LAST STATEMENTS OF THE
        TRANSACTION (see the module docstring)."""
        touched = {d.model for d in drafts if d.model}
        emitted = self._open.get(id(conn))
        if emitted is not None:
            emitted.models.update(touched)
        if self.on_change is not None:
            self.on_change(touched)
        with tracing.span("events.emit", {"modelreg.events": len(drafts)}):
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
                [d.project for d in drafts],
            )
        first = last - len(drafts) + 1
        if emitted is not None:
            emitted.sequences.extend(range(first, last + 1))
        return last
