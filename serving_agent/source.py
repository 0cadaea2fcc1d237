"""The source: follows the registry and declares each model's desired versions.

It is a translator over the SDK's `modelreg.watch.AsyncWatcher`, which owns the protocol
loop (resume after the last sequence, duplicate filtering, RESYNC_REQUIRED, bookmarks,
backoff). The source turns what the watcher yields into `Desired` and nothing else:

- a snapshot (every connection asks for one) re-declares every followed model from its
  `Deployment`; A FOLLOWED MODEL ABSENT FROM THE SNAPSHOT DOES NOT EXIST AND IS DECLARED
  EMPTY, which unloads it;
- EVENT_TYPE_DEPLOYMENT_CHANGED declares the complete `Deployment` the event carries;
- EVENT_TYPE_MODEL_DELETED declares the model empty.

A model followed through a named alias (`--model detector@champion`) is declared from the
alias instead of the production deployment: on every snapshot from one
GetModelVersion(`models/detector/versions/champion`) (NOT_FOUND: nothing to serve), then
from each EVENT_TYPE_ALIAS_CHANGED of that alias, whose details carry the target's artifact
(`details.artifact`, the registry's ArtifactRef) or a deletion (`to_version` 0: declared
empty). Its DEPLOYMENT_CHANGED events are not its business.

Apart from that one read per snapshot of an alias, it makes NO OTHER CALL to learn what to
serve: the messages carry the digests, formats and configs (downloads are the fetcher's).
Events a snapshot already covers (sequence at or below the snapshot's, replayed after a
resume) are skipped, so a reconnect never declares an older state on its way to the
current one (an alias read just after its snapshot may be newer than the events that
follow; those then pass through in order and end at the same, current, target). The
resume point (`watcher.last_sequence`) and the desired state are persisted to state.json
off the event loop, and `restore()` declares them at start-up so the agent serves before
the registry answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
from google.protobuf import json_format

from modelreg import errors
from modelreg.v1 import event_service_pb2 as ev
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res
from modelreg.watch import RESYNC_REQUIRED, AsyncWatcher, backoff_delay
from serving_agent.cache import StateFile
from serving_agent.metrics import Metrics
from serving_agent.spec import Desired, VersionSpec

log = logging.getLogger("modelreg.agent.source")

FORMATS = {
    res.ARTIFACT_FORMAT_ONNX: "onnx",
    res.ARTIFACT_FORMAT_ULTRALYTICS_PT: "ultralytics_pt",
    res.ARTIFACT_FORMAT_BUNDLE: "bundle",
    res.ARTIFACT_FORMAT_OTHER: "other",
}
# The only event types that change what an agent serves.
WATCHED_TYPES = (ev.EVENT_TYPE_DEPLOYMENT_CHANGED, ev.EVENT_TYPE_MODEL_DELETED)
# The agent reconnects faster than the SDK's default (0.8 s doubling to 30 s): a node that
# lost its registry should pick up a promotion within seconds of the registry's return.
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 2.0
# An error the SDK's watcher will not retry (the registry refuses the watch: a revoked or
# rotated token, a missing role) ends the watcher; a new one starts after a jittered backoff
# from FATAL_RETRY_FIRST doubling to FATAL_RETRY_MAX seconds, reset by the next message. The
# new watcher's calls carry the token as it is then (a token file is re-read when it
# changes), so a rotation heals without a restart.
FATAL_RETRY_FIRST = 1.0
FATAL_RETRY_MAX = 30.0
REFUSED = (errors.Unauthenticated, errors.PermissionDenied)


def model_of(deployment_name: str) -> str:
    """'models/m/deployment' -> 'm'."""
    return deployment_name.removeprefix("models/").removesuffix("/deployment")


def spec_from_ref(model: str, ref: res.ArtifactRef) -> VersionSpec:
    number = ref.version_number or int(ref.version.rpartition("/")[2])
    return VersionSpec(
        model=model,
        version=number,
        sha256=ref.sha256,
        format=FORMATS.get(ref.format, "other"),
        size_bytes=ref.size_bytes,
        filename=ref.filename,
        config=json_format.MessageToDict(ref.config) if ref.HasField("config") else {},
    )


def split_follow(entry: str) -> tuple[str, str | None]:
    """'models/detector@champion' -> ('detector', 'champion'); 'detector' -> ('detector', None)."""
    model, sep, alias = entry.removeprefix("models/").partition("@")
    return model, (alias.lower() if sep and alias.lower() != "production" else None)


def spec_from_version(model: str, mv: res.ModelVersion) -> VersionSpec:
    """The spec of a version as GetModelVersion returns it."""
    return VersionSpec(
        model=model,
        version=mv.version,
        sha256=mv.artifact.sha256,
        format=FORMATS.get(mv.format, "other"),
        size_bytes=mv.artifact.size_bytes,
        filename=mv.artifact.download_filename,
        config=json_format.MessageToDict(mv.config) if mv.HasField("config") else {},
    )


def spec_from_artifact(model: str, d: dict) -> VersionSpec:
    """The spec of an ALIAS_CHANGED event's `details.artifact` (ArtifactRef.as_dict on the
    registry; numbers arrive as floats through the Struct)."""
    return VersionSpec(
        model=model,
        version=int(d["version"]),
        sha256=str(d["sha256"]),
        format=str(d.get("format") or "other"),
        size_bytes=int(d.get("size_bytes") or 0),
        filename=str(d.get("filename") or ""),
        config=dict(d.get("config") or {}),
    )


def desired_from_deployment(model: str, d: res.Deployment) -> Desired:
    """What a Deployment asks one agent to serve (no canary: weight 0)."""
    stable = spec_from_ref(model, d.stable) if d.HasField("stable") else None
    canary = spec_from_ref(model, d.canary) if d.HasField("canary") else None
    return Desired(stable=stable, canary=canary, weight=d.canary_weight if canary else 0)


class RegistrySource:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        models: list[str],
        state: StateFile,
        on_desired: Callable[[str, Desired], None],
        *,
        actor: str = "serving-agent",
        bookmark_interval: int = 5,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
        metrics: Metrics | None = None,
    ):
        self.metrics = metrics or Metrics()
        self.channel = channel
        # Each entry is a model id, or MODEL@ALIAS to follow a named alias, not production.
        follow = dict(split_follow(m) for m in models)
        self.models = list(follow)
        self.aliases = {m: a for m, a in follow.items() if a is not None}
        self.state = state
        self.on_desired = on_desired
        self.metadata = (("x-modelreg-actor", actor),)
        self.bookmark_interval = bookmark_interval
        self.backoff = (backoff_first, backoff_max)
        saved = state.load()
        self.sequence: int | None = saved.get("sequence")  # the resume point state.json holds
        self.desired: dict[str, Desired] = {
            m: Desired.from_dict(d) for m, d in (saved.get("models") or {}).items() if m in follow
        }
        self.watcher: AsyncWatcher | None = None
        self._covered = 0  # the last snapshot's sequence: events up to it are in the snapshot
        self._lost: str | None = "not connected yet"  # why the connection is down, once logged
        self._saved: dict | None = None  # what state.json holds (as last written by this process)

    @property
    def connected(self) -> bool:
        return self.watcher is not None and self.watcher.connected

    def restore(self) -> None:
        """Declares the persisted desired state: what to serve before the registry answers."""
        for model, desired in self.desired.items():
            log.info("from the cache directory: models/%s -> %s", model, _describe(desired))
            self.on_desired(model, desired)

    async def run(self) -> None:
        """Follows the registry until cancelled. Only an error the watcher does not retry
        (say the registry refuses the watch) or a bug ends a watcher; then a new one starts
        after a backoff (FATAL_RETRY_FIRST doubling to FATAL_RETRY_MAX), resuming from the
        persisted cursor."""
        failures = 0
        while True:
            self.watcher = AsyncWatcher(
                self.channel,
                models=[f"models/{m}" for m in self.models],
                types=WATCHED_TYPES + ((ev.EVENT_TYPE_ALIAS_CHANGED,) if self.aliases else ()),
                after_sequence=self.sequence,
                snapshot=True,
                snapshot_on_resume=True,  # every connection re-reads the desired state
                bookmark_interval=self.bookmark_interval,
                metadata=self.metadata,
                backoff_first=self.backoff[0],
                backoff_max=self.backoff[1],
                on_retry=self._on_retry,
            )
            try:
                async for msg in self.watcher:
                    failures = 0
                    self.apply(msg)
                    if self.aliases and msg.WhichOneof("payload") == "snapshot":
                        await self._resolve_aliases(msg.snapshot)
                    await self._persist()
            except errors.ModelregError as e:
                delay = backoff_delay(failures, FATAL_RETRY_FIRST, FATAL_RETRY_MAX)
                lost = f"refused: {e}"
                if lost != self._lost:  # one line per change, not one per attempt
                    hint = "; check --token-file and the agent role of its principal" if isinstance(e, REFUSED) else ""
                    log.error(
                        "the registry refuses the watch (%s)%s; retrying (every %.0fs at most)",
                        e,
                        hint,
                        FATAL_RETRY_MAX,
                    )
                self._lost = lost
                failures += 1
                await asyncio.sleep(delay)
            except Exception:  # noqa: BLE001 - the source must outlive a bug in one message
                delay = backoff_delay(failures, FATAL_RETRY_FIRST, FATAL_RETRY_MAX)
                log.exception("source error; watching again in %.1fs", delay)
                self._lost = "source error"
                failures += 1
                await asyncio.sleep(delay)

    def apply(self, msg: ev.WatchEventsResponse) -> None:
        """Declares what one message says; records nothing but the snapshot's coverage."""
        kind = msg.WhichOneof("payload")
        if kind == "snapshot":
            if self._lost is not None:
                log.info("watching the registry at sequence %d", msg.snapshot.sequence)
            self._lost = None
            self._covered = msg.snapshot.sequence
            present = {model_of(d.name): d for d in msg.snapshot.deployments}
            for model in self.models:
                d = present.get(model)
                if d is None:
                    self._declare(model, Desired())
                elif model not in self.aliases:  # an alias is read after the snapshot
                    self._declare(model, desired_from_deployment(model, d))
        elif kind == "event":
            e = msg.event
            model = e.model.removeprefix("models/")
            if model not in self.models or e.sequence <= self._covered:
                return
            self.metrics.watch_lag.observe(max(0.0, time.time() - e.create_time.ToNanoseconds() / 1e9))
            if e.type == ev.EVENT_TYPE_MODEL_DELETED:
                self._declare(model, Desired())
            elif model in self.aliases:
                if e.type == ev.EVENT_TYPE_ALIAS_CHANGED:
                    self._apply_alias_event(model, self.aliases[model], e)
            elif e.type == ev.EVENT_TYPE_DEPLOYMENT_CHANGED:
                if not e.HasField("deployment"):
                    log.warning("event %d (DEPLOYMENT_CHANGED) carries no deployment; ignored", e.sequence)
                    return
                self._declare(model, desired_from_deployment(model, e.deployment))

    def _apply_alias_event(self, model: str, alias: str, e: ev.Event) -> None:
        details = json_format.MessageToDict(e.details) if e.HasField("details") else {}
        if details.get("alias") != alias:
            return
        if not int(details.get("to_version") or 0):
            self._declare(model, Desired())  # the alias was deleted: nothing to serve
        elif isinstance(details.get("artifact"), dict):
            self._declare(model, Desired(stable=spec_from_artifact(model, details["artifact"])))
        else:
            log.warning("event %d (ALIAS_CHANGED) carries no artifact; ignored", e.sequence)

    async def _resolve_aliases(self, snapshot: ev.Snapshot) -> None:
        """Declares each alias-followed model that exists from the version its alias points
        at now (NOT_FOUND: no such alias, nothing to serve). Another error ends this watcher,
        and the next one's snapshot reads again."""
        present = {model_of(d.name) for d in snapshot.deployments}
        stub = rs_grpc.RegistryServiceStub(self.channel)
        for model, alias in self.aliases.items():
            if model not in present:
                continue
            try:
                resp = await stub.GetModelVersion(
                    rs.GetModelVersionRequest(name=f"models/{model}/versions/{alias}"),
                    metadata=self.metadata,
                    timeout=10,
                )
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise errors.from_rpc_error(err) from None
                if self.desired.get(model) != Desired():
                    log.warning("models/%s has no alias %r (%s); nothing to serve", model, alias, err.details())
                self._declare(model, Desired())
                continue
            self._declare(model, Desired(stable=spec_from_version(model, resp.model_version)))

    def _declare(self, model: str, desired: Desired) -> None:
        if self.desired.get(model) != desired:
            log.info("desired: models/%s -> %s", model, _describe(desired))
            self.desired[model] = desired
            self.on_desired(model, desired)  # persisted by the caller, once per message

    async def _persist(self) -> None:
        """Writes the cursor and the desired state when they changed, off the event loop (a
        file write on the loop stalls every request in flight, once per promotion)."""
        if self.watcher is not None:
            # The watcher's resume point, or the snapshot's sequence when that is later (a
            # snapshot on a resume covers the replayed events it is followed by).
            seq = self.watcher.last_sequence
            self.sequence = max(seq, self._covered) if seq is not None else None
        state = {"sequence": self.sequence, "models": {m: d.to_dict() for m, d in self.desired.items()}}
        if state == self._saved:
            return
        await asyncio.to_thread(self.state.save, state)
        self._saved = state

    def _on_retry(self, error: grpc.RpcError | None, delay: float) -> None:
        """One log line per change of the connection's state, not one per attempt."""
        self.metrics.watch_reconnects.inc()
        if error is not None and errors.error_reason(error) == RESYNC_REQUIRED:
            log.warning(
                "watch cursor %s is too old (RESYNC_REQUIRED); re-reading the state from a fresh snapshot",
                self.sequence,
            )
            self._lost = RESYNC_REQUIRED
            return
        if error is None:
            reason = "the registry ended the watch"
        else:
            reason = f"registry unreachable ({error.code().name}: {error.details()})"
        if reason != self._lost:
            log.warning("%s; serving what is loaded, reconnecting (every %.1fs at most)", reason, self.backoff[1])
            self._lost = reason


def _describe(d: Desired) -> str:
    parts = [f"stable v{d.stable.version} ({d.stable.sha256[:12]})" if d.stable else "nothing to serve"]
    if d.canary:
        parts.append(f"canary v{d.canary.version} at {d.weight}%")
    return ", ".join(parts)
