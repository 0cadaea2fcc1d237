"""Model cards in Postgres (table `model_cards`, migration 0005): every SQL statement about
them. Decides nothing; the use case asks `domain.cards` what to write.

Locking: a write locks the card row (`lock`) for its transaction; `status_of` takes a
share lock on it, so a promotion that checks the status (a `require-card` gate, under its
model row lock) and a concurrent card edit serialize: the promotion sees the status before
or after the edit, never a status the edit is about to replace. Lock order: model row,
card row, event counter last.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from registry_server.domain.cards import CardStatus, ModelCard
from registry_server.errors import VersionNotFound


def card_from_row(row: asyncpg.Record) -> ModelCard:
    return ModelCard(
        model=row["model"],
        version=row["version"],
        content=row["card"],
        status=CardStatus(row["status"]),
        updated_by=row["updated_by"],
        update_time=row["updated_at"],
    )


async def get(conn: asyncpg.Pool | asyncpg.Connection, model: str, version: int) -> ModelCard | None:
    row = await conn.fetchrow("SELECT * FROM model_cards WHERE model = $1 AND version = $2", model, version)
    return card_from_row(row) if row is not None else None


async def lock(conn: asyncpg.Connection, model: str, version: int) -> ModelCard | None:
    """The card, its row locked to the end of `conn`'s transaction; None when there is none
    (nothing is locked then: `insert` reports a concurrent creation)."""
    row = await conn.fetchrow("SELECT * FROM model_cards WHERE model = $1 AND version = $2 FOR UPDATE", model, version)
    return card_from_row(row) if row is not None else None


async def insert(
    conn: asyncpg.Connection, model: str, version: int, content: dict[str, Any], status: CardStatus, actor: str
) -> ModelCard | None:
    """Creates a card; None when one was created concurrently (lock it and plan again).
    VersionNotFound when the version is gone."""
    try:
        row = await conn.fetchrow(
            "INSERT INTO model_cards (model, version, card, status, updated_by) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (model, version) DO NOTHING RETURNING *",
            model,
            version,
            content,
            status.value,
            actor,
        )
    except asyncpg.ForeignKeyViolationError:
        raise VersionNotFound(model, version) from None
    return card_from_row(row) if row is not None else None


async def update(
    conn: asyncpg.Connection, model: str, version: int, content: dict[str, Any], status: CardStatus, actor: str
) -> ModelCard:
    """Rewrites a card locked by `lock`."""
    row = await conn.fetchrow(
        "UPDATE model_cards SET card = $3, status = $4, updated_by = $5, updated_at = now()"
        " WHERE model = $1 AND version = $2 RETURNING *",
        model,
        version,
        content,
        status.value,
        actor,
    )
    assert row is not None, "update of a card that lock() did not return"
    return card_from_row(row)


async def status_of(conn: asyncpg.Pool | asyncpg.Connection, model: str, version: int) -> str | None:
    """The card's status (`draft`, `pending_review`, `approved`), None when the version has
    no card. Share-locks the card row for the rest of `conn`'s transaction (see the module
    docstring): call it inside the transaction that acts on the answer."""
    return await conn.fetchval(
        "SELECT status FROM model_cards WHERE model = $1 AND version = $2 FOR SHARE", model, version
    )
