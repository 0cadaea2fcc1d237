"""EventStream: what one watcher receives, in order.

1. A `Snapshot`: the watched models' deployments and the sequence they are valid at
   (unless skipped).
2. Every matching event after the cursor: from the hub's in-memory tail when it reaches
   back far enough, else from the table in pages.
3. Live events as the hub reads them, and a `Bookmark` with the cursor whenever nothing
   was sent for `bookmark_interval` seconds.

A cursor older than the retained history raises FailedPrecondition(RESYNC_REQUIRED); the
hub closing raises ShuttingDown (UNAVAILABLE) with the sequence to resume after.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from registry_server.domain.deployments import Deployment
from registry_server.errors import FailedPrecondition, Unavailable
from registry_server.events.hub import EventHub
from registry_server.storage import events as store
from registry_server.storage.deployments import DeploymentStore

# Events read from the table per page when replaying an old cursor.
REPLAY_PAGE = 500
RESYNC_REQUIRED = "RESYNC_REQUIRED"
SHUTTING_DOWN = "SHUTTING_DOWN"


@dataclass(frozen=True)
class Snapshot:
    sequence: int
    deployments: list[Deployment]


@dataclass(frozen=True)
class Bookmark:
    sequence: int


class ShuttingDown(Unavailable):
    def __init__(self, cursor: int | None):
        if cursor is None:
            super().__init__("the registry is shutting down; reconnect and watch again", reason=SHUTTING_DOWN)
            return
        super().__init__(
            f"the registry is shutting down; reconnect and resume with after_sequence={cursor}",
            reason=SHUTTING_DOWN,
            metadata={"resume_after_sequence": str(cursor)},
        )


def resync_required(after: int, oldest: int, latest: int) -> FailedPrecondition:
    if after > latest:
        msg = (
            f"after_sequence={after} is ahead of the registry's latest sequence {latest} "
            "(was the database restored?); re-read the state and watch again without after_sequence"
        )
    else:
        msg = (
            f"after_sequence={after} is older than the retained history (oldest retained sequence is "
            f"{oldest}); re-read the state and watch again without after_sequence"
        )
    return FailedPrecondition(
        msg,
        reason=RESYNC_REQUIRED,
        metadata={"after_sequence": str(after), "oldest_sequence": str(oldest), "latest_sequence": str(latest)},
    )


class Visibility(Protocol):
    """What one watcher may see (with auth on, the projects it may watch). `event` runs for
    every live event, so it is synchronous; `projects` filters replays in SQL (None: all)."""

    def event(self, ev: store.EventRow) -> bool: ...

    def projects(self) -> frozenset[str] | None: ...

    async def model(self, model: str) -> bool: ...


class EventStream:
    """One watcher's stream. Iterate it with `async for`. With a `visibility`, events and
    snapshot entries it forbids are skipped; the cursor (and bookmarks) still advance past
    them, so the watcher sees no gap in what it may see."""

    def __init__(
        self,
        hub: EventHub,
        pool: asyncpg.Pool,
        deployments: DeploymentStore,
        *,
        models: Sequence[str] = (),
        types: Sequence[str] = (),
        after: int | None = None,
        snapshot: bool = True,
        bookmark_interval: float = 10.0,
        visibility: Visibility | None = None,
    ):
        self.visibility = visibility
        self.hub = hub
        self.pool = pool
        self.deployments = deployments
        self.models = tuple(models)
        self.types = tuple(types)
        self.cursor = after
        self.snapshot = snapshot
        self.bookmark_interval = bookmark_interval

    def _matches(self, ev: store.EventRow) -> bool:
        return (
            (not self.models or ev.model in self.models)
            and (not self.types or ev.type in self.types)
            and (self.visibility is None or self.visibility.event(ev))
        )

    async def _check_retained(self, after: int) -> None:
        """Raises RESYNC_REQUIRED when events after `after` were pruned (or never existed)."""
        oldest = await store.oldest_sequence(self.pool)
        latest = await store.latest_sequence(self.pool)
        if oldest is None:
            oldest = latest + 1
        if after < oldest - 1 or after > latest:
            raise resync_required(after, oldest, latest)

    async def __aiter__(self) -> AsyncIterator[Snapshot | store.EventRow | Bookmark]:
        self.hub.stream_opened()
        try:
            async for item in self._run():
                yield item
        finally:
            self.hub.stream_closed()

    async def _run(self) -> AsyncIterator[Snapshot | store.EventRow | Bookmark]:
        if self.hub.closing:
            raise ShuttingDown(self.cursor)
        if self.cursor is not None:
            await self._check_retained(self.cursor)
        if self.snapshot:
            sequence, states = await self.deployments.snapshot(self.models)
            if self.visibility is not None:
                states = [d for d in states if await self.visibility.model(d.model)]
            yield Snapshot(sequence, states)
            if self.cursor is None:
                self.cursor = sequence
        elif self.cursor is None:
            self.cursor = await store.latest_sequence(self.pool)
        cursor = self.cursor
        last_sent = time.monotonic()
        while True:
            if self.hub.closing:
                raise ShuttingDown(cursor)
            if cursor < self.hub.last_seen:
                batch = self.hub.tail_after(cursor)
                sent = False
                if batch is not None:
                    upto = batch[-1].sequence if batch else cursor
                    for ev in batch:
                        if self._matches(ev):
                            yield ev
                            sent = True
                        self.cursor = cursor = ev.sequence
                    self.cursor = cursor = max(cursor, upto)
                else:
                    upto = self.hub.last_seen
                    rows = await store.fetch_after(
                        self.pool,
                        cursor,
                        REPLAY_PAGE,
                        upto=upto,
                        models=self.models,
                        types=self.types,
                        projects=self.visibility.projects() if self.visibility is not None else None,
                    )
                    # Retention deletes a prefix: if the row after the cursor still exists
                    # now, the page read before this check was complete.
                    await self._check_retained(cursor)
                    for ev in rows:
                        yield ev
                        sent = True
                        self.cursor = cursor = ev.sequence
                    if len(rows) < REPLAY_PAGE:
                        self.cursor = cursor = upto
                if sent:
                    last_sent = time.monotonic()
                continue
            remaining = last_sent + self.bookmark_interval - time.monotonic()
            if remaining <= 0:
                yield Bookmark(cursor)
                last_sent = time.monotonic()
                continue
            await self.hub.wait_beyond(cursor, remaining)
