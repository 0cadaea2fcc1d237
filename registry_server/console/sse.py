"""Live updates: GET /events/stream, Server-Sent Events from the registry's event hub.

It is WatchEvents over HTTP: the same `Events.watch` use case with the request's caller,
so a caller sees exactly the events of the projects it may watch (checked per event, so a
role change applies to an open stream). `?model=NAME` (repeatable, up to WatchEvents'
limit) narrows it to models; `?after=N` starts after event N (a page passes the sequence
it was rendered at, so nothing committed meanwhile is missed). Each event is an SSE
message (EventSource's `message`): `id: SEQUENCE` and `data:` the event's gRPC JSON
(`type` is EVENT_TYPE_STAGE_CHANGED, ...). An idle stream gets a comment every `keepalive_s`, at
which the caller's credential is checked again (a revoked token ends the stream).
EventSource reconnects with Last-Event-ID and resumes after it; the registry shutting
down sends `event: error` with reason SHUTTING_DOWN (reconnect), a cursor older than the
retained history `event: error` with its message (reload the page).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from registry_server.console.errors import http_error
from registry_server.console.session import caller_of
from registry_server.errors import InvalidArgument, RegistryError
from registry_server.events.stream import Bookmark, Snapshot
from registry_server.services.events import event_to_proto, parse_models


def _frame(data: dict, ident: int | None = None, event: str = "") -> bytes:
    head = (f"id: {ident}\n" if ident is not None else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream(request: Request) -> Response:
    uc = request.app.state.use_cases
    caller = await caller_of(request)
    models = parse_models(request.query_params.getlist("model"), "model")  # capped and deduplicated, as gRPC
    resume = request.headers.get("last-event-id", "") or request.query_params.get("after", "")
    after: int | None = None
    if resume:
        if not resume.isdigit():
            raise InvalidArgument(f"Last-Event-ID (or after) {resume!r} is not an event sequence")
        after = int(resume)
    # The stream's own authorization, answered before the response starts.
    await uc.events.authorize(caller, models)

    async def frames() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        items = uc.events.watch(caller, models, [], after, False, uc.keepalive_s)
        try:
            async for item in items:
                if isinstance(item, Bookmark):
                    await caller_of(request)  # a revoked or expired token ends the stream
                    yield f": keepalive {item.sequence}\n\n".encode()
                elif not isinstance(item, Snapshot):
                    proto = json_format.MessageToDict(event_to_proto(item))
                    yield _frame(proto, item.sequence)
        except RegistryError as exc:
            yield _frame(http_error(exc).body(), event="error")

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def routes() -> list[Route]:
    return [Route("/events/stream", stream, methods=["GET"])]
