"""Use cases of the event log: watch (snapshot, replay, live tail, bookmarks) and list.

A lost database is not a bug here: a watch ends with UNAVAILABLE saying where to resume
(ErrorInfo reason DATABASE_UNAVAILABLE), a list with UNAVAILABLE to retry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import asyncpg

from registry_server.domain.access import Caller, Permission
from registry_server.errors import ModelNotFound, PermissionDenied, Unavailable
from registry_server.events.hub import EventHub
from registry_server.events.stream import Bookmark, EventStream, Snapshot
from registry_server.storage import events as store
from registry_server.storage.db import DATABASE_DOWN
from registry_server.storage.deployments import DeploymentStore
from registry_server.usecases.access import Access


class _Watchable:
    """What one caller may watch, asked of `Access` at each event (role changes apply to
    open streams)."""

    def __init__(self, access: Access, caller: Caller):
        self.access, self.caller = access, caller

    def event(self, ev: store.EventRow) -> bool:
        return self.access.may_see(self.caller, ev.project)

    def projects(self) -> frozenset[str] | None:
        return self.access.readable(self.caller, Permission.WATCH)

    async def model(self, model: str) -> bool:
        try:
            return self.access.may_see(self.caller, await self.access.project_of(model))
        except ModelNotFound:
            return False


class Events:
    def __init__(self, hub: EventHub, pool: asyncpg.Pool, deployments: DeploymentStore, access: Access):
        self.hub = hub
        self.pool = pool
        self.deployments = deployments
        self.access = access

    async def authorize(self, caller: Caller, models: Sequence[str]) -> _Watchable | None:
        """events.watch in the project of every named model that exists, and in some
        project at all; the filter the stream then applies (None with auth off)."""
        if not caller.authenticated:
            return None
        for m in models:
            try:
                await self.access.require(caller, Permission.WATCH, model=m)
            except ModelNotFound:
                continue  # not created yet: its events are filtered when they come
        if self.access.readable(caller, Permission.WATCH) == frozenset():
            raise PermissionDenied(
                f"principal {caller.principal!r} lacks permission 'events.watch' in every project; grant it the "
                "viewer or agent role in a project"
            )
        return _Watchable(self.access, caller)

    async def watch(
        self,
        caller: Caller,
        models: Sequence[str],
        types: Sequence[str],
        after: int | None,
        snapshot: bool,
        bookmark_interval: float,
    ) -> AsyncIterator[Snapshot | store.EventRow | Bookmark]:
        visibility = await self.authorize(caller, models)
        stream = EventStream(
            self.hub,
            self.pool,
            self.deployments,
            models=models,
            types=types,
            after=after,
            snapshot=snapshot,
            bookmark_interval=bookmark_interval,
            visibility=visibility,
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

    async def list(
        self, caller: Caller, after: int, limit: int, models: Sequence[str], types: Sequence[str]
    ) -> list[store.EventRow]:
        visibility = await self.authorize(caller, models)
        projects = visibility.projects() if visibility is not None else None
        try:
            return await store.fetch_after(self.pool, after, limit, models=models, types=types, projects=projects)
        except DATABASE_DOWN as exc:
            raise Unavailable(
                f"the registry's database is unavailable ({exc!r}); retry shortly", reason="DATABASE_UNAVAILABLE"
            ) from exc
