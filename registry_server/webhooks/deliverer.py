"""The delivery worker: a background task of every registry replica.

How it keeps its promises:
- AT LEAST ONCE, FROM THE TABLE. Each webhook has a cursor (the last sequence it has
  queued). The worker reads the matching events after it, inserts one delivery row per
  event (its id assigned there, once) and moves the cursor, in one transaction; then it
  sends the oldest pending delivery and records the outcome. A crash before the record
  resends the same delivery, with the same id, after the restart: the only duplicates.
- ORDER. Per webhook, the pending delivery with the lowest sequence goes first, and the
  next only after it is delivered or failed for good.
- PARALLEL. One asyncio task per webhook, so a slow or dead receiver delays only itself.
- ONE REPLICA PER WEBHOOK. A webhook is served only under its lease (storage/webhooks.py),
  renewed every third of its duration; a replica that lost it stops writing for it.
- WAKING. The event hub's notifications (every replica's commits) wake every task; a scan
  every third of the lease picks up webhooks created elsewhere and expired leases.
- NO LEAK. Only events of the webhook's project (never an access event), and none while
  its creator may not read that project (with auth on); the cursor still moves past them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
from google.protobuf import json_format

from registry_server.domain.access import Permission
from registry_server.domain.webhooks import Delivery, Outcome, RetryPolicy, State, Webhook, outcome, signature
from registry_server.services.events import event_to_proto
from registry_server.storage.events import EventRow
from registry_server.storage.webhooks import WebhookStore
from registry_server.usecases.access import Access
from registry_server.webhooks.keys import SecretBox
from registry_server.webhooks.sender import Sender

log = logging.getLogger("modelreg.webhooks")

QUEUE_BATCH = 500
TRANSIENT = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def event_json(row: EventRow) -> dict:
    """The event as its proto JSON (what WatchEvents would send)."""
    return json_format.MessageToDict(event_to_proto(row))


def payload(delivery: Delivery) -> bytes:
    return json.dumps(
        {"delivery": delivery.id, "webhook": f"webhooks/{delivery.webhook}", "event": delivery.event},
        separators=(",", ":"),
    ).encode()


class Deliverer:
    def __init__(
        self,
        store: WebhookStore,
        box: SecretBox,
        sender: Sender,
        access: Access,
        policy: RetryPolicy,
        lease: timedelta,
    ):
        self.store = store
        self.box = box
        self.sender = sender
        self.access = access
        self.policy = policy
        self.lease = lease
        self.scan_interval = max(0.2, lease.total_seconds() / 3)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._tasks: dict[str, asyncio.Task] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        self._scan = asyncio.Event()
        self._runner: asyncio.Task | None = None

    # ------------------------------------------------------------ signals

    def on_events(self, rows: object) -> None:
        """The event hub's listener: new events (or possibly missed ones) wake every task."""
        for wake in self._wakes.values():
            wake.set()

    def poke(self, name: str = "") -> None:
        """A webhook was created, or a delivery requeued, in this process: act now."""
        self._scan.set()
        if name in self._wakes:
            self._wakes[name].set()

    # ------------------------------------------------------------ the supervisor

    async def run(self) -> None:
        self._runner = asyncio.current_task()
        failing = False
        while True:
            try:
                held = {w.name: w for w in await self.store.take_leases(self.owner, self.lease)}
                if failing:
                    log.info("webhook deliveries resumed")
                failing = False
            except TRANSIENT as e:
                if not failing:
                    log.warning("cannot take webhook leases (retrying): %r", e)
                failing = True
                held = None
            if held is not None:
                for name, task in list(self._tasks.items()):
                    if name not in held or task.done():
                        if task.done() and not task.cancelled() and task.exception() is not None:
                            log.error("webhook %s: delivery task failed: %r", name, task.exception())
                        task.cancel()
                        self._tasks.pop(name)
                        self._wakes.pop(name, None)
                for name, webhook in held.items():
                    if name not in self._tasks:
                        self._wakes[name] = asyncio.Event()
                        self._tasks[name] = asyncio.create_task(self._serve(webhook), name=f"webhook-{name}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._scan.wait(), self.scan_interval)
            self._scan.clear()

    async def stop(self) -> None:
        """Ends every task and hands the leases back, so another replica (or this one's
        restart) takes over at once."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        with contextlib.suppress(*TRANSIENT):
            await asyncio.wait_for(self.store.release(self.owner), 2)
        await self.sender.close()

    # ------------------------------------------------------------ one webhook

    async def _serve(self, webhook: Webhook) -> None:
        wake = self._wakes[webhook.name]
        cursor = webhook.cursor
        while True:
            try:
                moved = await self._queue(replace(webhook, cursor=cursor))
                if moved is None:
                    return  # the lease went to another replica, or the webhook was deleted
                cursor = moved
                delivery = await self.store.next_pending(webhook.name, self.owner)
                wait = self.scan_interval
                if delivery is not None:
                    due = (delivery.next_attempt_at - datetime.now(UTC)).total_seconds()
                    if due <= 0:
                        await self._attempt(webhook, delivery)
                        continue
                    wait = min(wait, due)
            except asyncio.CancelledError:
                raise
            except TRANSIENT as e:
                log.warning("webhook %s: database unavailable (retrying): %r", webhook.name, e)
                wait = self.scan_interval
            except Exception:  # noqa: BLE001 - a bug must not stop this webhook for good
                log.exception("webhook %s: delivery loop failed; retrying", webhook.name)
                wait = self.scan_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)
            wake.clear()

    async def _queue(self, webhook: Webhook) -> int | None:
        """Queues the events after the cursor; returns the new cursor (None: lease lost)."""
        cursor = webhook.cursor
        while True:
            rows, upto = await self.store.events_after(replace(webhook, cursor=cursor), QUEUE_BATCH)
            if not rows and upto == cursor:
                return cursor
            queued = []
            complete = len(rows) < QUEUE_BATCH
            rows = [r for r in rows if webhook.matches(r.type, r.model, r.project)]  # what the SQL selected
            if rows and await self._creator_may_read(webhook):
                queued = [(uuid.uuid4().hex, r.sequence, r.type, event_json(r)) for r in rows]
            moved = await self.store.enqueue(self.owner, webhook.name, queued, upto)
            if moved is None:
                return None
            cursor = moved
            if complete:
                return cursor

    async def _creator_may_read(self, webhook: Webhook) -> bool:
        if not self.access.enabled:
            return True
        grants = await self.access.grants_of(webhook.created_by)
        if grants.allows(Permission.READ, webhook.project):
            return True
        log.warning(
            "webhook %s: its creator %r may no longer read project %r; skipping its events",
            webhook.name,
            webhook.created_by,
            webhook.project,
        )
        return False

    async def _attempt(self, webhook: Webhook, d: Delivery) -> None:
        sealed = await self.store.secret(webhook.name)
        secret = self.box.open(sealed) if sealed is not None else None
        now = datetime.now(UTC)
        first = d.first_attempt_at or now
        if secret is None:
            error = (
                "this replica cannot decrypt the webhook's secret: its MODELREG_WEBHOOK_KEY differs from the one "
                "the webhook was created with; give every replica the same key, then redeliver"
            )
            await self.store.record(d.id, State.FAILED, 0, error, now, first, None)
            log.error("webhook %s: delivery %s failed: %s", webhook.name, d.id, error)
            return
        body = payload(d)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Modelreg-Event": d.event_type.lower(),
            "X-Modelreg-Delivery": d.id,
            "X-Modelreg-Timestamp": str(timestamp),
            "X-Modelreg-Signature": signature(secret, d.id, timestamp, body),
        }
        response = await self.sender.post(webhook.url, body, headers)
        now = datetime.now(UTC)
        result = Outcome.FAIL if response.permanent else outcome(response.status)
        status = response.status or 0
        if result is Outcome.DELIVERED:
            await self.store.record(d.id, State.DELIVERED, status, "", now, first, None)
            log.info("webhook %s: delivered event %d (delivery %s, HTTP %d)", webhook.name, d.sequence, d.id, status)
            return
        if result is Outcome.RETRY:
            at = self.policy.next_attempt(d.attempts + 1, response.retry_after, first, now)
            if at is not None:
                await self.store.record(d.id, State.PENDING, status, response.error, now, first, at)
                log.info(
                    "webhook %s: event %d not delivered (%s); retry %d in %.1fs",
                    webhook.name,
                    d.sequence,
                    response.error,
                    d.attempts + 1,
                    (at - now).total_seconds(),
                )
                return
            error = f"gave up after {d.attempts + 1} attempts over {self.policy.window}: {response.error}"
        else:
            error = response.error
        await self.store.record(d.id, State.FAILED, status, error, now, first, None)
        log.warning("webhook %s: delivery %s of event %d failed: %s", webhook.name, d.id, d.sequence, error)
