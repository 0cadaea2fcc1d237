"""Use cases of the event log: watch (snapshot, replay, live tail, bookmarks) and list.

A lost database is not a bug here: a watch ends with UNAVAILABLE saying where to resume
(ErrorInfo reason DATABASE_UNAVAILABLE), a list with UNAVAILABLE to retry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import asyncpg

from registry_server.errors import Unavailable
from registry_server.events.hub import EventHub
from registry_server.events.stream import Bookmark, EventStream, Snapshot
from registry_server.storage import events as store
from registry_server.storage.db import DATABASE_DOWN
from registry_server.storage.deployments import DeploymentStore


class Events:
    def __init__(self, hub: EventHub, pool: asyncpg.Pool, deployments: DeploymentStore):
        self.hub = hub
        self.pool = pool
        self.deployments = deployments

    async def watch(
        self,
        models: Sequence[str],
        types: Sequence[str],
        after: int | None,
        snapshot: bool,
        bookmark_interval: float,
    ) -> AsyncIterator[Snapshot | store.EventRow | Bookmark]:
        stream = EventStream(
            self.hub,
            self.pool,
            self.deployments,
            models=models,
            types=types,
            after=after,
            snapshot=snapshot,
            bookmark_interval=bookmark_interval,
        )
        try:
            async for item in stream:
                yield item
        except DATABASE_DOWN as exc:
            resume = f"resume with after_sequence={stream.cursor}" if stream.cursor is not None else "watch again"
            raise Unavailable(
                f"the registry's database is unavailable ({exc!r}); retry shortly and {resume}",
                reason="DATABASE_UNAVAILABLE",
                metadata={"resume_after_sequence": str(stream.cursor)} if stream.cursor is not None else {},
            ) from exc

    async def list(self, after: int, limit: int, models: Sequence[str], types: Sequence[str]) -> list[store.EventRow]:
        try:
            return await store.fetch_after(self.pool, after, limit, models=models, types=types)
        except DATABASE_DOWN as exc:
            raise Unavailable(f"the registry's database is unavailable ({exc!r}); retry shortly") from exc
