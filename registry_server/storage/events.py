"""SQL for the event stream: reading the outbox, the snapshot of model state, retention.

The writes live in `repository.Repository._emit` (same transaction as the change). Every
read here treats the `events` table as the truth: sequences are assigned under the
`event_sequence` row lock held until commit, so they are gap-free and commit-ordered, and
retention deletes only a prefix (never the latest event).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

EVENT_COLUMNS = "sequence, type, model, version, from_stage, to_stage, actor, reason, details, created_at"


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


# Postgres refuses NOTIFY payloads of 8000 bytes or more; larger batches NOTIFY just the
# last sequence.
NOTIFY_PAYLOAD_LIMIT = 7900


def parse_notify_payload(payload: str) -> list[EventRow] | None:
    """The events a NOTIFY carries (written by `repository._EMIT_SQL`: a JSON array of
    `[sequence, type, model, version, from_stage, to_stage, actor, reason, details,
    created_at]`), or None when it carries only a sequence (or is not ours to understand)."""
    if not payload.startswith("["):
        return None
    try:
        return [
            EventRow(int(q), t, m, int(v), f, to, a, reason, d or {}, datetime.fromisoformat(at))
            for q, t, m, v, f, to, a, reason, d, at in json.loads(payload)
        ]
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class ModelStateRow:
    """What agents should serve for one model: the stable (production) version and the
    canary with its weight (from `deployments`), each with its artifact's sha256."""

    model: str
    exists: bool
    production_version: int = 0
    production_sha256: str = ""
    canary_version: int = 0
    canary_sha256: str = ""
    canary_weight: int = 0


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
    )


async def fetch_after(
    conn: asyncpg.Pool | asyncpg.Connection,
    after: int,
    limit: int,
    *,
    upto: int | None = None,
    models: Sequence[str] = (),
    types: Sequence[str] = (),
) -> list[EventRow]:
    """Events with `after < sequence <= upto`, in sequence order, at most `limit`,
    optionally only for `models` (ids) and `types` (DB type strings)."""
    rows = await conn.fetch(
        f"SELECT {EVENT_COLUMNS} FROM events"
        " WHERE sequence > $1 AND ($2::bigint IS NULL OR sequence <= $2)"
        " AND (cardinality($3::text[]) = 0 OR model = ANY($3))"
        " AND (cardinality($4::text[]) = 0 OR type = ANY($4))"
        " ORDER BY sequence LIMIT $5",
        after,
        upto,
        list(models),
        list(types),
        limit,
    )
    return [_row(r) for r in rows]


async def latest_sequence(conn: asyncpg.Pool | asyncpg.Connection) -> int:
    """The latest committed sequence (0 before the first event)."""
    return int(await conn.fetchval("SELECT last FROM event_sequence WHERE id = 1"))


async def oldest_sequence(conn: asyncpg.Pool | asyncpg.Connection) -> int | None:
    """The oldest retained sequence, or None when no event is stored."""
    return await conn.fetchval("SELECT min(sequence) FROM events")


async def model_states(
    conn: asyncpg.Pool | asyncpg.Connection, models: Sequence[str] = ()
) -> tuple[int, list[ModelStateRow]]:
    """The state of `models` (every model when empty) and the sequence it is valid at.

    ONE STATEMENT, so the state and the sequence come from the same MVCC snapshot: every
    change up to the sequence is reflected, none after it.
    """
    rows = await conn.fetch(
        "WITH s AS (SELECT last FROM event_sequence WHERE id = 1),"
        " wanted AS (SELECT unnest($1::text[]) AS name"
        "  UNION ALL SELECT name FROM models WHERE cardinality($1::text[]) = 0)"
        " SELECT s.last, w.name AS wanted, m.name, m.production_version, v.sha256,"
        "  d.canary_version, d.canary_weight, c.sha256 AS canary_sha256"
        " FROM s"
        " LEFT JOIN (wanted w LEFT JOIN models m ON m.name = w.name) ON true"
        " LEFT JOIN model_versions v ON v.model = m.name AND v.version = m.production_version"
        " LEFT JOIN deployments d ON d.model = m.name AND d.canary_version > 0"
        " LEFT JOIN model_versions c ON c.model = m.name AND c.version = d.canary_version"
        " ORDER BY w.name",
        list(models),
    )
    sequence = int(rows[0]["last"]) if rows else await latest_sequence(conn)
    states = []
    for r in rows:
        name = r["wanted"] or r["name"]
        if name is None:  # no model at all
            continue
        states.append(
            ModelStateRow(
                model=name,
                exists=r["name"] is not None,
                production_version=r["production_version"] or 0,
                production_sha256=r["sha256"] or "",
                canary_version=r["canary_version"] or 0,
                canary_sha256=r["canary_sha256"] or "",
                canary_weight=r["canary_weight"] or 0,
            )
        )
    return sequence, states


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
