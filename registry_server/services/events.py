"""EventService: WatchEvents and ListEvents. Proto in, stream logic, proto out."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import asyncpg
import grpc

from modelreg.v1 import event_service_pb2 as es
from modelreg.v1 import event_service_pb2_grpc as es_grpc
from modelreg.v1 import resources_pb2 as res
from registry_server.config import Settings
from registry_server.domain.deployments import Deployment
from registry_server.domain.names import model_name, parse_model_name, version_name
from registry_server.domain.stages import Stage
from registry_server.errors import InvalidArgument
from registry_server.events.hub import EventHub
from registry_server.events.stream import Bookmark, Snapshot
from registry_server.metrics import RegistryMetrics
from registry_server.services import convert as cv
from registry_server.services.auth import caller_of
from registry_server.storage import events as store
from registry_server.storage.deployments import DeploymentStore
from registry_server.usecases.access import Access
from registry_server.usecases.events import Events

log = logging.getLogger("modelreg.events")

DEFAULT_LIST_PAGE = 100
MAX_LIST_PAGE = 1000
MAX_WATCHED_MODELS = 1000
MIN_BOOKMARK_INTERVAL = 1.0


def type_names() -> dict[int, str]:
    """EventType value -> DB type string (EVENT_TYPE_STAGE_CHANGED -> STAGE_CHANGED)."""
    return {
        v.number: v.name.removeprefix("EVENT_TYPE_")
        for v in es.EventType.DESCRIPTOR.values
        if v.number != es.EVENT_TYPE_UNSPECIFIED
    }


TYPE_TO_DB = type_names()
TYPE_FROM_DB = {name: es.EventType.ValueType(number) for number, name in TYPE_TO_DB.items()}


def _stage(value: str) -> res.Stage.ValueType:
    return cv.STAGE_TO_PROTO[Stage(value)] if value else res.STAGE_UNSPECIFIED


def event_to_proto(ev: store.EventRow) -> es.Event:
    details = ev.details
    deployment = None
    if "deployment" in details:  # DEPLOYMENT_CHANGED carries the deployment itself
        details = {k: v for k, v in details.items() if k != "deployment"}
        d = Deployment.from_dict(ev.model, ev.details["deployment"])
        deployment = cv.deployment_to_proto(replace(d, update_time=ev.created_at))
    elif ev.type == "DEPLOYMENT_CHANGED":  # written before events carried it: versions and digests only
        deployment = cv.deployment_to_proto(Deployment.from_dict(ev.model, details), with_policy=False)
    return es.Event(
        sequence=ev.sequence,
        type=TYPE_FROM_DB.get(ev.type, es.EVENT_TYPE_UNSPECIFIED),
        model=model_name(ev.model) if ev.model else "",
        project=ev.project or "",
        model_version=version_name(ev.model, ev.version) if ev.version and ev.type != "DEPLOYMENT_CHANGED" else "",
        from_stage=_stage(ev.from_stage),
        to_stage=_stage(ev.to_stage),
        actor=ev.actor,
        reason=ev.reason,
        create_time=cv.ts(ev.created_at),
        details=cv.struct(details),
        deployment=deployment,
    )


def snapshot_to_proto(s: Snapshot) -> es.Snapshot:
    return es.Snapshot(sequence=s.sequence, deployments=[cv.deployment_to_proto(d) for d in s.deployments])


def parse_models(names, field: str = "models") -> list[str]:
    if len(names) > MAX_WATCHED_MODELS:
        raise InvalidArgument(f"'{field}' names {len(names)} models; the maximum is {MAX_WATCHED_MODELS}")
    out: list[str] = []
    for i, name in enumerate(names):
        model = parse_model_name(name, f"{field}[{i}]")
        if model not in out:
            out.append(model)
    return out


def parse_types(values, field: str = "types") -> list[str]:
    out: list[str] = []
    for i, value in enumerate(values):
        if value not in TYPE_TO_DB:
            raise InvalidArgument(
                f"'{field}[{i}]' is {value}, not an event type; use one of "
                + ", ".join(f"EVENT_TYPE_{n}" for n in TYPE_TO_DB.values())
            )
        out.append(TYPE_TO_DB[value])
    return out


RESPONSE_CACHE = 4096


class EventServicer(es_grpc.EventServiceServicer):
    def __init__(self, events: Events, settings: Settings, metrics: RegistryMetrics | None = None):
        self.metrics = metrics or RegistryMetrics()
        self.events = events
        self.settings = settings
        # An event fans out to every watcher: build its response once, not once per stream.
        self._responses: collections.OrderedDict[int, es.WatchEventsResponse] = collections.OrderedDict()

    def _event_response(self, ev: store.EventRow) -> es.WatchEventsResponse:
        resp = self._responses.get(ev.sequence)
        if resp is None:
            resp = es.WatchEventsResponse(event=event_to_proto(ev))
            self._responses[ev.sequence] = resp
            if len(self._responses) > RESPONSE_CACHE:
                self._responses.popitem(last=False)
        return resp

    async def WatchEvents(self, request: es.WatchEventsRequest, context):
        models = parse_models(request.models)
        types = parse_types(request.types)
        after = request.after_sequence if request.HasField("after_sequence") else None
        if after is not None and after < 0:
            raise InvalidArgument(f"after_sequence must be 0 or more, not {after}; leave it unset to start now")
        if request.bookmark_interval_seconds < 0:
            raise InvalidArgument(
                f"bookmark_interval_seconds must be positive, not {request.bookmark_interval_seconds}; "
                f"0 means the server default ({self.settings.bookmark_interval:g}s)"
            )
        interval = max(
            MIN_BOOKMARK_INTERVAL, float(request.bookmark_interval_seconds or self.settings.bookmark_interval)
        )
        lag = self.metrics.event_lag
        self.metrics.watch_streams.inc()
        try:
            caller = caller_of(context)
            async for item in self.events.watch(caller, models, types, after, not request.skip_snapshot, interval):
                if isinstance(item, Snapshot):
                    yield es.WatchEventsResponse(snapshot=snapshot_to_proto(item))
                elif isinstance(item, Bookmark):
                    yield es.WatchEventsResponse(bookmark=es.Bookmark(sequence=item.sequence))
                else:
                    response = self._event_response(item)
                    lag.observe(max(0.0, time.time() - item.created_at.timestamp()))
                    yield response
        finally:
            self.metrics.watch_streams.dec()

    async def ListEvents(self, request: es.ListEventsRequest, context) -> es.ListEventsResponse:
        models = parse_models(request.models)
        types = parse_types(request.types)
        if request.after_sequence < 0:
            raise InvalidArgument(f"after_sequence must be 0 or more, not {request.after_sequence}")
        if request.page_size < 0:
            raise InvalidArgument(f"page_size must not be negative; 0 means the default ({DEFAULT_LIST_PAGE})")
        size = min(request.page_size or DEFAULT_LIST_PAGE, MAX_LIST_PAGE)
        after = cv.decode_int_token("events", request.page_token, request.after_sequence)
        rows = await self.events.list(caller_of(context), after, size + 1, models, types)
        token = cv.encode_token("events", rows[size - 1].sequence) if len(rows) > size else ""
        return es.ListEventsResponse(events=[event_to_proto(r) for r in rows[:size]], next_page_token=token)


async def attach_event_service(
    server: grpc.aio.Server,
    pool: asyncpg.Pool,
    deployments: DeploymentStore,
    database_url: str,
    settings: Settings,
    access: Access,
    on_events: Callable[[list[store.EventRow] | None], None] | None = None,
    metrics: RegistryMetrics | None = None,
) -> tuple[Callable[[], Awaitable[None]], Events]:
    """Starts the process's event hub, adds EventService to `server` and returns the
    closer and the Events use case (for the console's live updates). The closer ends every
    open stream with UNAVAILABLE (resume with after_sequence=N) within the shutdown grace
    period, then stops the hub. `on_events` is called with every
    batch of committed events (the read cache's invalidation feed)."""
    hub = EventHub(pool, database_url, retention=settings.event_retention)
    if on_events is not None:
        hub.listeners.append(on_events)
    await hub.start()
    events = Events(hub, pool, deployments, access)
    es_grpc.add_EventServiceServicer_to_server(EventServicer(events, settings, metrics), server)

    async def close() -> None:
        await hub.close_streams(settings.shutdown_grace)
        await hub.stop()

    return close, events
