"""The source: follows the registry and declares each model's desired versions.

It subscribes with WatchEvents (snapshot first, then events, bookmarks), resuming after
the sequence it persisted in the cache directory. Every (re)connect re-reads the desired
state, so a promotion made while the agent was away is never missed. A cursor that is too
old (RESYNC_REQUIRED) is dropped and the watch starts again. A registry without the event
stream (UNIMPLEMENTED) is polled instead. When the registry is unreachable the source
retries with backoff and the manager keeps serving what it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from google.protobuf import json_format

from modelreg.v1 import event_service_pb2 as ev
from modelreg.v1 import event_service_pb2_grpc as ev_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res
from serving_agent.cache import StateFile
from serving_agent.spec import Desired, VersionSpec

try:  # the deployment API (canary) comes with issue 6
    from modelreg.v1 import deployment_service_pb2 as dp
    from modelreg.v1 import deployment_service_pb2_grpc as dp_grpc
except ImportError:  # pragma: no cover
    dp = dp_grpc = None

log = logging.getLogger("modelreg.agent.source")

FORMATS = {
    res.ARTIFACT_FORMAT_ONNX: "onnx",
    res.ARTIFACT_FORMAT_ULTRALYTICS_PT: "ultralytics_pt",
    res.ARTIFACT_FORMAT_BUNDLE: "bundle",
    res.ARTIFACT_FORMAT_OTHER: "other",
}
RELEVANT = {
    ev.EVENT_TYPE_MODEL_CREATED,
    ev.EVENT_TYPE_MODEL_DELETED,
    ev.EVENT_TYPE_VERSION_DELETED,
    ev.EVENT_TYPE_STAGE_CHANGED,
    ev.EVENT_TYPE_DEPLOYMENT_CHANGED,
}


def spec_from_proto(model: str, mv: res.ModelVersion) -> VersionSpec:
    return VersionSpec(
        model=model,
        version=mv.version,
        sha256=mv.artifact.sha256,
        format=FORMATS.get(mv.format, "other"),
        size_bytes=mv.artifact.size_bytes,
        filename=mv.artifact.filename,
        config=json_format.MessageToDict(mv.config) if mv.HasField("config") else {},
    )


class RegistrySource:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        models: list[str],
        state: StateFile,
        on_desired: Callable[[str, Desired], None],
        *,
        actor: str = "serving-agent",
        poll_interval: float = 1.0,
        max_backoff: float = 2.0,
        bookmark_interval: int = 5,
    ):
        self.registry = rs_grpc.RegistryServiceStub(channel)
        self.events = ev_grpc.EventServiceStub(channel)
        self.deployments = dp_grpc.DeploymentServiceStub(channel) if dp_grpc else None
        self.has_deployments = dp_grpc is not None
        self.models = models
        self.state = state
        self.on_desired = on_desired
        self.metadata = (("x-modelreg-actor", actor),)
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.bookmark_interval = bookmark_interval
        saved = state.load()
        self.sequence: int | None = saved.get("sequence")
        self.desired: dict[str, Desired] = {
            m: Desired.from_dict(d) for m, d in (saved.get("models") or {}).items() if m in models
        }
        self.connected = False
        self.mode = "watch"
        self._saved: dict | None = None  # what state.json holds (as last written by this process)

    def restore(self) -> None:
        """Declares the persisted desired state: what to serve before the registry answers."""
        for model, desired in self.desired.items():
            log.info("from the cache directory: models/%s -> %s", model, _describe(desired))
            self.on_desired(model, desired)

    async def _persist(self) -> None:
        """Writes the cursor and the desired state when they changed, off the event loop (a
        file write on the loop stalls every request in flight, once per promotion)."""
        state = {"sequence": self.sequence, "models": {m: d.to_dict() for m, d in self.desired.items()}}
        if state == self._saved:
            return
        await asyncio.to_thread(self.state.save, state)
        self._saved = state

    def _declare(self, model: str, desired: Desired) -> None:
        if self.desired.get(model) != desired:
            log.info("desired: models/%s -> %s", model, _describe(desired))
            self.desired[model] = desired
            self.on_desired(model, desired)  # persisted by the caller, once per message

    async def _spec(self, model: str, version: int | str) -> VersionSpec | None:
        try:
            resp = await self.registry.GetModelVersion(
                rs.GetModelVersionRequest(name=f"models/{model}/versions/{version}"),
                metadata=self.metadata,
                timeout=10,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return spec_from_proto(model, resp.model_version)

    async def _deployment(self, model: str) -> Desired | None:
        """The model's deployment (stable, canary, weight), or None when the registry has no
        DeploymentService (then production is the only desired version)."""
        if not self.has_deployments:
            return None
        try:
            resp = await self.deployments.GetDeployment(
                dp.GetDeploymentRequest(name=f"models/{model}/deployment"), metadata=self.metadata, timeout=10
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.has_deployments = False
                return None
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        d = resp.deployment
        stable = await self._spec(model, d.stable_version) if d.stable_version else None
        canary = await self._spec(model, d.canary_version) if d.canary_version else None
        return Desired(stable=stable, canary=canary, weight=d.canary_weight if canary else 0)

    async def resolve(self, model: str, state: ev.ModelState | None = None) -> None:
        """Reads a model's desired state from the registry and declares it."""
        if state is not None and state.exists is False and state.model:
            self._declare(model, Desired())
            return
        deployment = await self._deployment(model)
        if deployment is not None:
            self._declare(model, deployment)
            return
        stable = await self._spec(model, "production")
        current = self.desired.get(model, Desired())
        canary, weight = (current.canary, current.weight) if state is None else (None, 0)
        if state is not None and state.canary_version:
            canary = await self._spec(model, state.canary_version)
            weight = state.canary_weight if canary else 0
        self._declare(model, Desired(stable=stable, canary=canary, weight=weight))

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                if self.mode == "watch":
                    await self._watch()
                else:
                    await self._poll()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                self.connected = False
                code = e.code()
                if code == grpc.StatusCode.UNIMPLEMENTED and self.mode == "watch":
                    log.warning("the registry has no WatchEvents; polling every %.1fs instead", self.poll_interval)
                    self.mode = "poll"
                    continue
                if code == grpc.StatusCode.FAILED_PRECONDITION and error_reason(e) == "RESYNC_REQUIRED":
                    log.warning("watch cursor %s is too old (RESYNC_REQUIRED); re-reading state", self.sequence)
                    self.sequence = None
                    await self._persist()
                    continue
                attempt += 1
                delay = min(self.max_backoff, 0.1 * 2**attempt)
                if attempt <= 3 or attempt % 30 == 0:
                    log.warning("registry unreachable (%s: %s); serving what is loaded, retrying every %.1fs",
                                code.name, e.details(), delay)
                await asyncio.sleep(delay)
                continue
            except Exception:  # noqa: BLE001 - the source must outlive any bug in one message
                log.exception("source error; reconnecting")
                await asyncio.sleep(self.max_backoff)
                continue
            attempt = 0

    async def _watch(self) -> None:
        req = ev.WatchEventsRequest(
            models=[f"models/{m}" for m in self.models],
            bookmark_interval_seconds=self.bookmark_interval,
        )
        if self.sequence is not None:
            req.after_sequence = self.sequence
        call = self.events.WatchEvents(req, metadata=self.metadata)
        async for msg in call:
            kind = msg.WhichOneof("payload")
            if kind == "snapshot":
                states = {s.model.removeprefix("models/"): s for s in msg.snapshot.models}
                for model in self.models:
                    await self.resolve(model, states.get(model))
                self.sequence = max(self.sequence or 0, msg.snapshot.sequence)
                self.connected = True
            elif kind == "event":
                e = msg.event
                model = e.model.removeprefix("models/")
                if model in self.models and e.type in RELEVANT:
                    await self.resolve(model)
                self.sequence = e.sequence
            elif kind == "bookmark":
                self.sequence = msg.bookmark.sequence
                self.connected = True
            await self._persist()

    async def _poll(self) -> None:
        while True:
            for model in self.models:
                await self.resolve(model)
            await self._persist()
            self.connected = True
            await asyncio.sleep(self.poll_interval)


def _describe(d: Desired) -> str:
    parts = [f"stable v{d.stable.version} ({d.stable.sha256[:12]})" if d.stable else "no production version"]
    if d.canary:
        parts.append(f"canary v{d.canary.version} at {d.weight}%")
    return ", ".join(parts)


def error_reason(e: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason of a failed call, or ''."""
    from google.rpc import error_details_pb2, status_pb2

    for key, value in e.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""
