"""SQL for reading the event log: pages after a cursor, the latest and oldest sequence,
retention.

The writes live in `outbox.Outbox.emit` (same transaction as the change). Every
read here treats the `events` table as the truth: sequences are assigned under the
`event_sequence` row lock held until commit, so they are gap-free and commit-ordered, and
retention deletes only a prefix (never the latest event).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

EVENT_COLUMNS = "sequence, type, model, version, from_stage, to_stage, actor, reason, details, created_at, project"


@dataclass(frozen=True)
class EventRow:
    """One committed event, as stored."""

    sequence: int
    type: str
    model: str
    version: int
    from_stage: str
    to_stage: str
    actor: str
    reason: str
    details: dict[str, Any]
    created_at: datetime
    # The model's project; None for an access event, which only admins may see.
    project: str | None = None


def _row(r: asyncpg.Record) -> EventRow:
    return EventRow(
        sequence=r["sequence"],
        type=r["type"],
        model=r["model"],
        version=r["version"],
        from_stage=r["from_stage"],
        to_stage=r["to_stage"],
        actor=r["actor"],
        reason=r["reason"],
        details=r["details"] or {},
        created_at=r["created_at"],
        project=r["project"],
    )


async def fetch_after(
    conn: asyncpg.Pool | asyncpg.Connection,
    after: int,
    limit: int,
    *,
    upto: int | None = None,
    models: Sequence[str] = (),
    types: Sequence[str] = (),
    projects: frozenset[str] | None = None,
) -> list[EventRow]:
    """Events with `after < sequence <= upto`, in sequence order, at most `limit`,
    optionally only for `models` (ids) and `types` (DB type strings), and only of
    `projects` when it is not None (access events, of no project, are then excluded)."""
    rows = await conn.fetch(
        f"SELECT {EVENT_COLUMNS} FROM events"
        " WHERE sequence > $1 AND ($2::bigint IS NULL OR sequence <= $2)"
        " AND (cardinality($3::text[]) = 0 OR model = ANY($3))"
        " AND (cardinality($4::text[]) = 0 OR type = ANY($4))"
        " AND ($6::text[] IS NULL OR project = ANY($6))"
        " ORDER BY sequence LIMIT $5",
        after,
        upto,
        list(models),
        list(types),
        limit,
        sorted(projects) if projects is not None else None,
    )
    return [_row(r) for r in rows]


async def latest_sequence(conn: asyncpg.Pool | asyncpg.Connection) -> int:
    """The latest committed sequence (0 before the first event)."""
    return int(await conn.fetchval("SELECT last FROM event_sequence WHERE id = 1"))


async def oldest_sequence(conn: asyncpg.Pool | asyncpg.Connection) -> int | None:
    """The oldest retained sequence, or None when no event is stored."""
    return await conn.fetchval("SELECT min(sequence) FROM events")


async def prune(conn: asyncpg.Pool | asyncpg.Connection, retention: timedelta) -> int:
    """Deletes the prefix of events older than `retention`, keeping at least the latest
    event (so the oldest retained sequence is always known). Returns rows deleted."""
    status = await conn.execute(
        "DELETE FROM events WHERE sequence <= ("
        "  SELECT max(sequence) FROM events WHERE created_at < now() - $1::interval"
        ") AND sequence < (SELECT max(sequence) FROM events)",
        retention,
    )
    return int(status.split()[-1])
