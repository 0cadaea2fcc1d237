"""Webhooks and their deliveries in Postgres (tables webhooks and webhook_deliveries): every
SQL statement about them. It decides nothing: the use case and the deliverer ask
domain/webhooks.py.

The lease: a webhook is delivered for by the replica named in `lease_owner` until
`lease_expires`; a replica takes a free or expired lease, renews its own, and checks it in
the same statement as every write it makes for the webhook (queueing deliveries, moving
the cursor), so a replica that lost its lease writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from registry_server.domain.webhooks import Delivery, State, Webhook
from registry_server.errors import AlreadyExists, NotFound
from registry_server.storage import events as event_store

_COUNTS = (
    "(SELECT count(*) FROM webhook_deliveries d WHERE d.webhook = w.name AND d.state = 'pending') AS pending,"
    " (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook = w.name AND d.state = 'failed') AS failed"
)
_WEBHOOK = f"w.name, w.project, w.url, w.event_types, w.models, w.created_by, w.created_at, w.cursor, {_COUNTS}"


def webhook_not_found(name: str) -> NotFound:
    return NotFound(f"webhook 'webhooks/{name}' does not exist; list webhooks with 'modelreg webhooks list'")


def _webhook(r: asyncpg.Record) -> Webhook:
    return Webhook(
        name=r["name"],
        project=r["project"],
        url=r["url"],
        event_types=tuple(r["event_types"]),
        models=tuple(r["models"]),
        created_by=r["created_by"],
        created_at=r["created_at"],
        cursor=r["cursor"],
        pending=r.get("pending", 0),
        failed=r.get("failed", 0),
    )


def _delivery(r: asyncpg.Record) -> Delivery:
    event = r["event"]
    return Delivery(
        id=r["id"],
        webhook=r["webhook"],
        sequence=r["sequence"],
        event_type=r["event_type"],
        event=json.loads(event) if isinstance(event, str) else event,
        state=State(r["state"]),
        attempts=r["attempts"],
        redeliveries=r["redeliveries"],
        last_status=r["last_status"],
        last_error=r["last_error"],
        created_at=r["created_at"],
        first_attempt_at=r["first_attempt_at"],
        last_attempt_at=r["last_attempt_at"],
        next_attempt_at=r["next_attempt_at"],
        delivered_at=r["delivered_at"],
    )


class WebhookStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    # ------------------------------------------------------------ the resource

    async def create(
        self,
        name: str,
        project: str,
        url: str,
        event_types: Sequence[str],
        models: Sequence[str],
        secret: bytes,
        created_by: str,
        after: int | None,
    ) -> Webhook:
        """Stores a webhook whose cursor is `after`, or the latest sequence (no replay)."""
        try:
            row = await self.pool.fetchrow(
                "WITH w AS (INSERT INTO webhooks (name, project, url, event_types, models, secret, created_by, cursor)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7,"
                " COALESCE($8::bigint, (SELECT last FROM event_sequence WHERE id = 1)))"
                " RETURNING *) SELECT w.*, 0::bigint AS pending, 0::bigint AS failed FROM w",
                name,
                project,
                url,
                list(event_types),
                list(models),
                secret,
                created_by,
                after,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(
                f"webhook 'webhooks/{name}' already exists; pick another name or delete it first "
                f"('modelreg webhooks delete {name}')"
            ) from None
        return _webhook(row)

    async def get(self, name: str) -> Webhook:
        row = await self.pool.fetchrow(f"SELECT {_WEBHOOK} FROM webhooks w WHERE w.name = $1", name)
        if row is None:
            raise webhook_not_found(name)
        return _webhook(row)

    async def list_webhooks(self, projects: frozenset[str] | None, after_name: str, limit: int) -> list[Webhook]:
        """By name after `after_name`, of `projects` (None: every project)."""
        rows = await self.pool.fetch(
            f"SELECT {_WEBHOOK} FROM webhooks w WHERE w.name > $1 AND ($2::text[] IS NULL OR w.project = ANY($2))"
            " ORDER BY w.name LIMIT $3",
            after_name,
            sorted(projects) if projects is not None else None,
            limit,
        )
        return [_webhook(r) for r in rows]

    async def delete(self, name: str) -> None:
        if await self.pool.execute("DELETE FROM webhooks WHERE name = $1", name) == "DELETE 0":
            raise webhook_not_found(name)

    async def secret(self, name: str) -> bytes | None:
        return await self.pool.fetchval("SELECT secret FROM webhooks WHERE name = $1", name)

    # ------------------------------------------------------------ deliveries (readers)

    async def deliveries(self, name: str, failed_only: bool, before: int, limit: int) -> list[Delivery]:
        """Highest sequence first, below `before`."""
        rows = await self.pool.fetch(
            "SELECT * FROM webhook_deliveries WHERE webhook = $1 AND sequence < $2"
            " AND (NOT $3 OR state = 'failed') ORDER BY sequence DESC LIMIT $4",
            name,
            before,
            failed_only,
            limit,
        )
        return [_delivery(r) for r in rows]

    async def redeliver(self, name: str, delivery_id: str) -> Delivery | None:
        """Queues a delivery again (a fresh retry window, due now); None when unknown."""
        row = await self.pool.fetchrow(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, redeliveries = redeliveries + 1,"
            " first_attempt_at = NULL, next_attempt_at = now(), delivered_at = NULL"
            " WHERE webhook = $1 AND id = $2 RETURNING *",
            name,
            delivery_id,
        )
        return _delivery(row) if row is not None else None

    # ------------------------------------------------------------ the deliverer

    async def take_leases(self, owner: str, ttl: timedelta) -> list[Webhook]:
        """Takes every free or expired lease and renews this owner's; returns the webhooks
        it now holds."""
        rows = await self.pool.fetch(
            "UPDATE webhooks w SET lease_owner = $1, lease_expires = now() + $2::interval"
            " WHERE lease_owner IS NULL OR lease_owner = $1 OR lease_expires < now()"
            " RETURNING w.name, w.project, w.url, w.event_types, w.models, w.created_by, w.created_at, w.cursor",
            owner,
            ttl,
        )
        return [_webhook(r) for r in rows]

    async def release(self, owner: str) -> None:
        await self.pool.execute(
            "UPDATE webhooks SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = $1", owner
        )

    async def events_after(self, webhook: Webhook, limit: int) -> tuple[list[event_store.EventRow], int]:
        """The webhook's matching events after its cursor (at most `limit`), and the cursor
        to move to: the last event read, or the latest committed sequence when the page was
        complete (the events skipped as not matching are then passed too)."""
        latest = await event_store.latest_sequence(self.pool)
        rows = await event_store.fetch_after(
            self.pool,
            webhook.cursor,
            limit,
            upto=latest,
            models=webhook.models,
            types=webhook.event_types,
            projects=frozenset({webhook.project}),
        )
        return rows, (rows[-1].sequence if len(rows) == limit else max(latest, webhook.cursor))

    async def enqueue(
        self, owner: str, name: str, queued: Sequence[tuple[str, int, str, dict]], cursor: int
    ) -> int | None:
        """Queues deliveries (id, sequence, type, event JSON) and moves the cursor, if this
        owner still holds the lease; returns the new cursor, None when the lease is lost."""
        async with self.pool.acquire() as conn, conn.transaction():
            held = await conn.fetchval(
                "SELECT cursor FROM webhooks WHERE name = $1 AND lease_owner = $2 FOR UPDATE", name, owner
            )
            if held is None:
                return None
            if queued:
                await conn.executemany(
                    "INSERT INTO webhook_deliveries (id, webhook, sequence, event_type, event)"
                    " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (webhook, sequence) DO NOTHING",
                    [(i, name, seq, t, json.dumps(ev)) for i, seq, t, ev in queued],
                )
            cursor = max(cursor, held)
            await conn.execute("UPDATE webhooks SET cursor = $2 WHERE name = $1", name, cursor)
            return cursor

    async def next_pending(self, name: str, owner: str) -> Delivery | None:
        """The webhook's oldest pending delivery (lowest sequence: order is per webhook), or
        None when there is none or this owner's lease on the webhook has lapsed."""
        row = await self.pool.fetchrow(
            "SELECT d.* FROM webhook_deliveries d JOIN webhooks w ON w.name = d.webhook"
            " WHERE d.webhook = $1 AND d.state = 'pending' AND w.lease_owner = $2 AND w.lease_expires > now()"
            " ORDER BY d.sequence LIMIT 1",
            name,
            owner,
        )
        return _delivery(row) if row is not None else None

    async def record(
        self,
        delivery_id: str,
        state: State,
        status: int,
        error: str,
        attempted_at: datetime,
        first_attempt_at: datetime,
        next_attempt_at: datetime | None,
    ) -> None:
        await self.pool.execute(
            "UPDATE webhook_deliveries SET state = $2::text, attempts = attempts + 1, last_status = $3,"
            " last_error = $4, last_attempt_at = $5::timestamptz, first_attempt_at = $6,"
            " next_attempt_at = COALESCE($7::timestamptz, next_attempt_at),"
            " delivered_at = CASE WHEN $2::text = 'delivered' THEN $5::timestamptz END"
            " WHERE id = $1",
            delivery_id,
            state.value,
            status,
            error[:1000],
            attempted_at,
            first_attempt_at,
            next_attempt_at,
        )
