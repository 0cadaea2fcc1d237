"""EventHub: one per server process. It LISTENs on one dedicated connection, reads each
batch of newly committed events from the table ONCE, keeps a bounded in-memory tail of
them and wakes every stream, so a thousand watchers cost one query per batch, not a
thousand.

Invariants:
- THE TABLE IS THE TRUTH. A NOTIFY carries its transaction's events (Postgres delivers
  notifications in commit order, which is sequence order), so the hub delivers them without
  a query when they continue exactly where it is; anything else (a payload too big to
  carry them, a gap) only wakes the reader, which reads the table. A lost notification
  (the listening connection dropped) costs at most one poll interval.
- `last_seen` only grows, and the tail holds the contiguous events
  `tail_first .. last_seen`. Sequences are assigned under a row lock held to commit, so a
  read of `sequence > last_seen` never skips an event that commits later.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import random
from collections.abc import Callable
from datetime import timedelta

import asyncpg

from registry_server.outage import Outage
from registry_server.storage import db
from registry_server.storage import events as store
from registry_server.storage.outbox import EVENTS_CHANNEL, parse_notify_payload

log = logging.getLogger("modelreg.events")

# Events read from the table per query.
READ_BATCH = 1000
# Events kept in memory for streams that are slightly behind.
TAIL_SIZE = 10_000
# Safety-net poll: the hub reads the table at least this often, notified or not.
POLL_INTERVAL = 1.0
# How often the listening connection is probed when idle.
LISTEN_PROBE_INTERVAL = 5.0
LISTEN_BACKOFF_FIRST = 0.5
LISTEN_BACKOFF_MAX = 10.0
LISTENER_APPLICATION_NAME = "modelreg-listener"
# Seconds stop() waits for the loops to finish their current query before cancelling them.
STOP_TIMEOUT = 5.0


def prune_interval(retention: timedelta) -> float:
    """Seconds between retention sweeps: a tenth of the retention, 1 s to 5 min."""
    return min(300.0, max(1.0, retention.total_seconds() / 10))


class EventHub:
    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        *,
        retention: timedelta,
        poll_interval: float = POLL_INTERVAL,
        tail_size: int = TAIL_SIZE,
    ):
        self.pool = pool
        self.database_url = database_url
        self.retention = retention
        self.poll_interval = poll_interval
        self.last_seen = 0
        self.tail: collections.deque[store.EventRow] = collections.deque(maxlen=tail_size)
        self.tail_first = 1
        self.closing = False
        self.active_streams = 0
        self.listener_connected = asyncio.Event()
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        # The listening connection also serves the hub's reads (so a saturated pool never
        # delays delivery); one operation at a time on it.
        self._listener_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        # Set by stop(): the loops finish their current query and return (cancelling a
        # query mid-flight leaves asyncpg cancel-request tasks behind).
        self._stopping = asyncio.Event()
        # Called with every batch of new events, in order; `None` when events may have been
        # missed (the sequence jumped), so the listener must forget what it derived.
        self.listeners: list[Callable[[list[store.EventRow] | None], None]] = []
        self._lost: asyncio.Event | None = None
        self._streams_done = asyncio.Event()
        self._streams_done.set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.last_seen = await store.latest_sequence(self.pool)
        self.tail_first = self.last_seen + 1
        self._tasks = [
            asyncio.create_task(self._listen_loop(), name="modelreg-events-listen"),
            asyncio.create_task(self._read_loop(), name="modelreg-events-read"),
            asyncio.create_task(self._prune_loop(), name="modelreg-events-prune"),
        ]

    async def close_streams(self, grace: float) -> None:
        """Ends every open stream (they raise ShuttingDown) and waits up to `grace` s."""
        self.closing = True
        self._publish()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._streams_done.wait(), grace)

    async def stop(self) -> None:
        self.closing = True
        self._publish()
        self._stopping.set()
        self._wake.set()
        if self._lost is not None:
            self._lost.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT)
            for t in pending:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        await self._drop_listener()

    async def _pause(self, seconds: float) -> None:
        """Sleeps up to `seconds`, less when the hub stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # ------------------------------------------------------------------ streams' API

    def stream_opened(self) -> None:
        self.active_streams += 1
        self._streams_done.clear()

    def stream_closed(self) -> None:
        self.active_streams -= 1
        if self.active_streams == 0:
            self._streams_done.set()

    def tail_after(self, after: int) -> list[store.EventRow] | None:
        """The events after `after` up to `last_seen` from memory, or None when `after`
        is older than the tail (read the table instead)."""
        if after >= self.last_seen:
            return []
        if after < self.tail_first - 1:
            return None
        wanted = self.last_seen - after
        return list(itertools.islice(reversed(self.tail), wanted))[::-1]

    async def wait_beyond(self, after: int, timeout: float) -> None:
        """Returns when events after `after` are in memory, the hub is closing, or after
        `timeout` seconds, whichever comes first."""
        if self.last_seen > after or self.closing:
            return
        # asyncio.timeout, not wait_for: no extra task per waiting stream per event.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    def wake(self) -> None:
        """Asks the hub to read the table now."""
        self._wake.set()

    # ------------------------------------------------------------------ reading

    def _publish(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        if self.closing:
            self._changed.set()
        old.set()

    def _append(self, rows: list[store.EventRow]) -> None:
        if rows[0].sequence <= self.last_seen:
            # The reader and a notification can both bring the same events.
            rows = [r for r in rows if r.sequence > self.last_seen]
            if not rows:
                return
        if rows[0].sequence != self.last_seen + 1:
            # Only after retention pruned past us or the database was replaced; the
            # table is the truth, so restart the tail there.
            log.warning("event sequence jumped from %d to %d", self.last_seen, rows[0].sequence)
            self.tail.clear()
            self.tail_first = rows[0].sequence
            self._notify_listeners(None)
        self.tail.extend(rows)
        self._notify_listeners(rows)
        self.tail_first = self.tail[0].sequence
        self.last_seen = rows[-1].sequence
        self._publish()

    def _notify_listeners(self, rows: list[store.EventRow] | None) -> None:
        for listener in self.listeners:
            try:
                listener(rows)
            except Exception:  # noqa: BLE001 - a listener must not stop delivery
                log.exception("event listener failed")

    async def read_new(self) -> int:
        """Reads every committed event after `last_seen` into the tail; returns how many."""
        total = 0
        while True:
            rows = await self._fetch_new()
            if not rows:
                return total
            self._append(rows)
            total += len(rows)
            if len(rows) < READ_BATCH:
                return total

    async def _fetch_new(self) -> list[store.EventRow]:
        conn = self._listener
        if conn is None or conn.is_closed():
            return await store.fetch_after(self.pool, self.last_seen, READ_BATCH)
        async with self._listener_lock:
            return await asyncio.wait_for(
                store.fetch_after(conn, self.last_seen, READ_BATCH), LISTEN_PROBE_INTERVAL * 2
            )

    async def _read_loop(self) -> None:
        outage = Outage("event reader", log)
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                await self.read_new()
                outage.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the reader outlives a database outage
                outage.failed(exc)

    # ------------------------------------------------------------------ listening

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        rows = parse_notify_payload(payload)
        if rows and rows[0].sequence <= self.last_seen + 1 and not self._stopping.is_set():
            self._append(rows)
        else:
            self._wake.set()

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        self.listener_connected.clear()
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
            if not conn.is_closed():
                conn.terminate()

    async def _listen_loop(self) -> None:
        delay = LISTEN_BACKOFF_FIRST
        outage = Outage("event listener (LISTEN)", log)
        while not self._stopping.is_set():
            lost = self._lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                kwargs = db.connect_kwargs(self.database_url)
                conn = await asyncpg.connect(
                    **kwargs, server_settings={"application_name": LISTENER_APPLICATION_NAME}, timeout=10
                )
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
                await conn.add_listener(EVENTS_CHANNEL, self._on_notify)
                self._listener = conn
                self.listener_connected.set()
                if outage.down:
                    outage.ok()
                else:
                    log.info("listening for events on channel %s", EVENTS_CHANNEL)
                delay = LISTEN_BACKOFF_FIRST
                self._wake.set()  # catch up on whatever committed while we were not listening
                while not lost.is_set() and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), LISTEN_PROBE_INTERVAL)
                    if not lost.is_set() and not conn.is_closed():
                        async with self._listener_lock:
                            await asyncio.wait_for(conn.fetchval("SELECT 1"), LISTEN_PROBE_INTERVAL)
                if self._stopping.is_set():
                    break
                outage.failed(ConnectionError("the listening connection was lost"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep trying; the poll covers the gap
                outage.failed(exc)
            if conn is not None and self._listener is not conn and not conn.is_closed():
                conn.terminate()  # failed half-way through setting up
            await self._drop_listener()
            await self._pause(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, LISTEN_BACKOFF_MAX)
        async with self._listener_lock:  # let an in-flight read finish before closing
            await self._drop_listener()

    # ------------------------------------------------------------------ retention

    async def prune(self) -> int:
        return await store.prune(self.pool, self.retention)

    async def _prune_loop(self) -> None:
        interval = prune_interval(self.retention)
        outage = Outage("event retention sweep", log)
        while not self._stopping.is_set():
            try:
                removed = await self.prune()
                if removed:
                    log.info("pruned %d events older than %s", removed, self.retention)
                outage.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retry at the next sweep
                outage.failed(exc)
            await self._pause(interval)
