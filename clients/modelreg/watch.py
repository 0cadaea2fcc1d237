"""Watching the registry's event stream, with resume, dedup and resync built in.

    from modelreg import Client
    reg = Client()
    for item in reg.watch(models=["detector"], types=["stage_changed"]):
        kind = item.WhichOneof("payload")        # "snapshot", "event" or "bookmark"
        if kind == "event":
            print(item.event.sequence, item.event.model, item.event.model_version)

A `Watcher` yields `WatchEventsResponse` messages: first a snapshot (the watched models'
state and the sequence it is valid at), then every event after it, in sequence order, and
bookmarks on an idle stream. When the connection drops it reconnects with jittered
exponential backoff (0.8 s doubling to 30 s), resumes after the last sequence it handed
out and drops duplicates, so the caller sees each event once. When the server answers
RESYNC_REQUIRED (the cursor is older than the retained history) it watches again without a
cursor and yields a fresh snapshot: re-read your state from it.

Given a target string ("host:port") instead of a channel, a watcher opens (and closes) its
own channel with `credentials` (default `Credentials.from_env()`: MODELREG_TOKEN or
MODELREG_TOKEN_FILE, MODELREG_CA_CERT, ...). UNAUTHENTICATED and PERMISSION_DENIED are
not retried: they are raised as `modelreg.errors.Unauthenticated` / `PermissionDenied`.

`AsyncWatcher` is the same over grpc.aio, for `async for`. Both report each reconnect to
an optional `on_retry(error, delay)` callback and expose `connected` (a stream is open and
has answered) and `last_error` (why the last stream ended), so a long-running client can
log its connection's state changes without re-implementing the loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence

import grpc

from modelreg import errors
from modelreg.credentials import Credentials, aio_channel, sync_channel
from modelreg.v1 import event_service_pb2 as es
from modelreg.v1 import event_service_pb2_grpc as es_grpc

BACKOFF_FIRST = 0.8
BACKOFF_MAX = 30.0
RESYNC_REQUIRED = "RESYNC_REQUIRED"
# Statuses that retrying cannot fix: they are raised to the caller.
FATAL = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
)

EVENT_TYPES = {
    v.name.removeprefix("EVENT_TYPE_").lower(): es.EventType.ValueType(v.number)
    for v in es.EventType.DESCRIPTOR.values
    if v.number != es.EVENT_TYPE_UNSPECIFIED
}


def event_type_enum(value: str | int) -> es.EventType.ValueType:
    """'stage_changed', 'STAGE_CHANGED', 'stage-changed' or 'EVENT_TYPE_STAGE_CHANGED' -> enum."""
    if isinstance(value, int):
        return es.EventType.ValueType(value)
    key = value.strip().lower().replace("-", "_").removeprefix("event_type_")
    if key not in EVENT_TYPES:
        raise errors.InvalidArgument(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unknown event type {value!r}: use one of {', '.join(sorted(EVENT_TYPES))}",
        )
    return EVENT_TYPES[key]


def event_type_name(value: int) -> str:
    if value not in es.EventType.values():
        return str(value)
    return es.EventType.Name(es.EventType.ValueType(value)).removeprefix("EVENT_TYPE_")


def _model_name(model: str) -> str:
    return model if model.startswith("models/") else f"models/{model}"


def backoff_delay(attempt: int, first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> float:
    """Jittered exponential backoff: `first * 2**attempt` capped at `cap`, then a uniform
    draw in [half, full] of that, so reconnecting watchers spread out."""
    full = min(cap, first * (2 ** min(attempt, 32)))
    return random.uniform(full / 2, full)


class _Cursor:
    """Resume point and duplicate filter shared by the sync and async watchers."""

    def __init__(
        self,
        models: Iterable[str],
        types: Iterable[str | int],
        after_sequence: int | None,
        snapshot: bool,
        snapshot_on_resume: bool,
        bookmark_interval: int,
    ):
        self.models = [_model_name(m) for m in models]
        self.types = [event_type_enum(t) for t in types]
        self.last_sequence = after_sequence
        self.snapshot = snapshot
        self.snapshot_on_resume = snapshot_on_resume
        self.bookmark_interval = bookmark_interval
        self.connected_once = False
        self.show_snapshot = snapshot
        self.reconnects = 0
        self.resyncs = 0
        self.connected = False

    def request(self) -> es.WatchEventsRequest:
        if self.last_sequence is None:
            # Without a cursor the snapshot is what gives us one, so always ask for it; the
            # caller sees it if they wanted it, and always after a resync (re-read state).
            ask = True
            self.show_snapshot = True if self.resyncs else self.snapshot
        else:
            ask = self.show_snapshot = self.snapshot if not self.connected_once else self.snapshot_on_resume
        req = es.WatchEventsRequest(
            models=self.models,
            types=self.types,
            skip_snapshot=not ask,
            bookmark_interval_seconds=self.bookmark_interval,
        )
        if self.last_sequence is not None:
            req.after_sequence = self.last_sequence
        return req

    def accept(self, msg: es.WatchEventsResponse) -> bool:
        """Updates the cursor; False for a duplicate the caller must not see."""
        kind = msg.WhichOneof("payload")
        if kind == "event":
            seq = msg.event.sequence
            if self.last_sequence is not None and seq <= self.last_sequence:
                return False
            self.last_sequence = seq
        elif kind == "bookmark":
            if self.last_sequence is None or msg.bookmark.sequence > self.last_sequence:
                self.last_sequence = msg.bookmark.sequence
        elif kind == "snapshot":
            if self.last_sequence is None:
                self.last_sequence = msg.snapshot.sequence
            return self.show_snapshot
        return True

    def failed(self, err: grpc.RpcError) -> bool:
        """Handles a stream's end; True to retry at once (resync), False to back off.
        Raises the error when retrying cannot help."""
        code = err.code()
        if code == grpc.StatusCode.FAILED_PRECONDITION and errors.error_reason(err) == RESYNC_REQUIRED:
            self.last_sequence = None
            self.resyncs += 1
            return True
        if code in FATAL:
            raise errors.from_rpc_error(err) from None
        return False


class _Progress:
    """What a watcher has seen so far (both watchers keep it in a `_Cursor`)."""

    _cursor: _Cursor

    @property
    def last_sequence(self) -> int | None:
        """The last sequence received; resume after it."""
        return self._cursor.last_sequence

    @property
    def reconnects(self) -> int:
        return self._cursor.reconnects

    @property
    def resyncs(self) -> int:
        return self._cursor.resyncs

    @property
    def connected(self) -> bool:
        """True while a stream is open and has delivered at least one message."""
        return self._cursor.connected


class Watcher(_Progress):
    """A resuming iterator over WatchEvents. Stop it with `close()` (from any thread) or by
    leaving the `for` loop. `last_sequence` is the resume point it has reached.
    `on_retry(error, delay)` is called before each reconnect (error is None when the server
    ended the stream without one; delay is 0 for a resync). A channel passed in stays open
    after `close()`; one made from a target string (with `credentials`) is closed."""

    def __init__(
        self,
        channel: str | grpc.Channel,
        *,
        models: Iterable[str] = (),
        types: Iterable[str | int] = (),
        after_sequence: int | None = None,
        snapshot: bool = True,
        snapshot_on_resume: bool = False,
        bookmark_interval: int = 0,
        metadata: Sequence[tuple[str, str]] = (),
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
        on_retry: Callable[[grpc.RpcError | None, float], None] | None = None,
        credentials: Credentials | None = None,
    ):
        self._own_channel: grpc.Channel | None = None
        if isinstance(channel, str):
            channel = self._own_channel = sync_channel(channel, credentials or Credentials.from_env())
        self._stub = es_grpc.EventServiceStub(channel)
        self._on_retry = on_retry
        self._cursor = _Cursor(models, types, after_sequence, snapshot, snapshot_on_resume, bookmark_interval)
        self._metadata = tuple(metadata)
        self._backoff = (backoff_first, backoff_max)
        self._closed = threading.Event()
        self._call: grpc.Call | None = None
        self.last_error: grpc.RpcError | None = None

    def close(self) -> None:
        self._closed.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._own_channel is not None:
            self._own_channel.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, callback: Callable[[es.WatchEventsResponse], None]) -> None:
        """Calls `callback` for each item until `close()`."""
        for item in self:
            callback(item)

    def __iter__(self) -> Iterator[es.WatchEventsResponse]:
        attempt = 0
        cur = self._cursor
        try:
            while not self._closed.is_set():
                call = self._stub.WatchEvents(cur.request(), metadata=self._metadata)
                self._call = call
                if self._closed.is_set():
                    call.cancel()
                try:
                    for msg in call:
                        cur.connected_once = cur.connected = True
                        attempt = 0
                        if cur.accept(msg):
                            yield msg
                    retry_now = False  # the server ended the stream cleanly: reconnect
                    self.last_error = None
                except grpc.RpcError as err:
                    if self._closed.is_set():
                        return
                    self.last_error = err
                    retry_now = cur.failed(err)
                finally:
                    cur.connected = False
                if self._closed.is_set():
                    return
                cur.reconnects += 1
                delay = 0.0 if retry_now else backoff_delay(attempt, *self._backoff)
                if self._on_retry is not None:
                    self._on_retry(self.last_error, delay)
                if not retry_now:
                    self._closed.wait(delay)
                    attempt += 1
        finally:
            if self._call is not None:
                self._call.cancel()


class AsyncWatcher(_Progress):
    """The Watcher over grpc.aio: `async for item in AsyncWatcher("host:port", models=[...])`.
    Stop it with `await close()` or by leaving the loop. `on_retry(error, delay)` is called
    before each reconnect, as for `Watcher` (error None: the server ended the stream without
    one; delay 0: a resync, the next item is a fresh snapshot). A channel passed in stays
    open after `close()`; one made from a target string (with `credentials`) is closed."""

    def __init__(
        self,
        target: str | grpc.aio.Channel,
        *,
        models: Iterable[str] = (),
        types: Iterable[str | int] = (),
        after_sequence: int | None = None,
        snapshot: bool = True,
        snapshot_on_resume: bool = False,
        bookmark_interval: int = 0,
        metadata: Sequence[tuple[str, str]] = (),
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
        on_retry: Callable[[grpc.RpcError | None, float], None] | None = None,
        credentials: Credentials | None = None,
    ):
        self._own_channel = isinstance(target, str)
        self._channel = (
            aio_channel(target, credentials or Credentials.from_env()) if isinstance(target, str) else target
        )
        self._stub = es_grpc.EventServiceStub(self._channel)
        self._on_retry = on_retry
        self._cursor = _Cursor(models, types, after_sequence, snapshot, snapshot_on_resume, bookmark_interval)
        self._metadata = tuple(metadata)
        self._backoff = (backoff_first, backoff_max)
        self._closed = asyncio.Event()
        self._call: grpc.aio.UnaryStreamCall | None = None
        self.last_error: grpc.RpcError | None = None

    async def close(self) -> None:
        self._closed.set()
        if self._call is not None:
            self._call.cancel()
        if self._own_channel:
            await self._channel.close()

    async def __aenter__(self) -> AsyncWatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[es.WatchEventsResponse]:
        attempt = 0
        cur = self._cursor
        try:
            while not self._closed.is_set():
                call = self._stub.WatchEvents(cur.request(), metadata=self._metadata)
                self._call = call
                try:
                    async for msg in call:
                        cur.connected_once = cur.connected = True
                        attempt = 0
                        if cur.accept(msg):
                            yield msg
                    retry_now = False  # the server ended the stream cleanly: reconnect
                    self.last_error = None
                except grpc.RpcError as err:
                    if self._closed.is_set():
                        return
                    self.last_error = err
                    retry_now = cur.failed(err)
                except asyncio.CancelledError:
                    if self._closed.is_set():
                        return
                    raise
                finally:
                    cur.connected = False
                if self._closed.is_set():
                    return
                cur.reconnects += 1
                delay = 0.0 if retry_now else backoff_delay(attempt, *self._backoff)
                if self._on_retry is not None:
                    self._on_retry(self.last_error, delay)
                if not retry_now:
                    try:
                        await asyncio.wait_for(self._closed.wait(), delay)
                    except TimeoutError:
                        pass
                    attempt += 1
        finally:
            if self._call is not None:
                self._call.cancel()


def list_events(
    channel: grpc.Channel,
    *,
    models: Iterable[str] = (),
    types: Iterable[str | int] = (),
    after_sequence: int = 0,
    page_size: int = 0,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float | None = 60.0,
) -> Iterator[es.Event]:
    """Every retained event after `after_sequence`, in sequence order (ListEvents, paged)."""
    stub = es_grpc.EventServiceStub(channel)
    token = ""
    while True:
        req = es.ListEventsRequest(
            models=[_model_name(m) for m in models],
            types=[event_type_enum(t) for t in types],
            after_sequence=after_sequence,
            page_size=page_size,
            page_token=token,
        )
        try:
            resp = stub.ListEvents(req, metadata=tuple(metadata), timeout=timeout)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None
        yield from resp.events
        token = resp.next_page_token
        if not token:
            return
