"""`Agent`: the serving agent's core, usable in-process as a library or behind the
inference gRPC server (`modelreg agent`).

    from serving_agent import Agent, AgentConfig
    agent = Agent(AgentConfig(registry="10.0.0.5:50051", models=("fraud",), cache_dir=Path("/var/cache/modelreg")))
    await agent.start()
    await agent.wait_ready()
    result = await agent.predict("fraud", {"x": np.ones((1, 4), np.float32)})
    result.model_version, result.outputs["y"]
    await agent.stop()

Against a registry with auth on and TLS, pass its credentials (a token file is re-read
when it changes): AgentConfig(..., credentials=Credentials(token_file=Path("agent.token"),
ca_cert=Path("ca.pem"))), or `serving_agent.security.registry_credentials()` for the flags'
environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np

from modelreg.credentials import Credentials, aio_channel
from modelreg.v1 import agent_service_pb2 as ag
from modelreg.v1 import agent_service_pb2_grpc as ag_grpc
from modelreg_runtime import tracing
from serving_agent.cache import BlobCache, StateFile
from serving_agent.errors import BadInput, ModelNotFollowed, WrongModelKind
from serving_agent.fetch import Fetcher
from serving_agent.loaders import Detections, RuntimeOptions
from serving_agent.manager import Backoff, ManagerHooks, ModelManager
from serving_agent.metrics import Metrics
from serving_agent.policy import State
from serving_agent.security import describe_registry
from serving_agent.signature import Signature, check_request
from serving_agent.source import RegistrySource
from serving_agent.spec import Desired

log = logging.getLogger("modelreg.agent")

STATE_TO_PROTO = {
    State.NEW: ag.SERVED_VERSION_STATE_LOADING,
    State.LOADING: ag.SERVED_VERSION_STATE_LOADING,
    State.READY: ag.SERVED_VERSION_STATE_SERVING,
    State.FAILED: ag.SERVED_VERSION_STATE_FAILED,
    State.UNLOADING: ag.SERVED_VERSION_STATE_UNLOADING,
}
MAX_MESSAGE = 64 * 1024 * 1024


def keep_warm_from_env() -> int:
    """MODELREG_AGENT_KEEP_WARM: how many versions no longer desired stay loaded per model
    (default 1; 0 unloads a version as soon as its successor serves)."""
    raw = os.environ.get("MODELREG_AGENT_KEEP_WARM", "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"MODELREG_AGENT_KEEP_WARM={raw!r} is not a whole number (0 turns warm standby off)") from None
    if value < 0:
        raise ValueError(f"MODELREG_AGENT_KEEP_WARM={raw!r} must not be negative (0 turns warm standby off)")
    return value


@dataclass(frozen=True)
class AgentConfig:
    """Everything an agent needs; `modelreg agent` builds it from flags and the environment."""

    registry: str = "127.0.0.1:50051"
    # how the agent proves who it is to the registry (a token, a token file re-read when it
    # changes, TLS, mTLS): every call on its one channel carries it. Default: none, plaintext.
    credentials: Credentials = field(default_factory=Credentials)
    models: tuple[str, ...] = ()
    cache_dir: Path = Path(".modelreg-agent")
    cache_max_bytes: int = 10 * 1024**3
    agent_id: str = ""
    node: str = field(default_factory=socket.gethostname)
    address: str = ""  # where the inference API listens, reported to the registry
    providers: tuple[str, ...] = ()
    intra_op_threads: int = 0
    report_interval: float = 2.0
    retry_initial: float = 1.0
    retry_max: float = 30.0
    # versions no longer desired kept loaded per model, so a rollback to one is a pointer flip
    keep_warm: int = field(default_factory=keep_warm_from_env)

    def resolved_agent_id(self) -> str:
        return self.agent_id or f"{self.node}-{os.getpid()}"

    def describe(self) -> list[tuple[str, str]]:
        return [
            ("registry", self.registry),
            *describe_registry(self.credentials),
            ("models", ", ".join(self.models)),
            ("cache dir", str(self.cache_dir)),
            ("cache max bytes", str(self.cache_max_bytes)),
            ("agent id", self.resolved_agent_id()),
            ("node", self.node),
            ("providers", ", ".join(self.providers) or "CUDA when present, else CPU"),
            ("intra-op threads", str(self.intra_op_threads or "onnxruntime default")),
            ("report interval", f"{self.report_interval:g}s"),
            ("keep warm", f"{self.keep_warm} previous version(s) per model" if self.keep_warm else "off"),
        ]


@dataclass
class Prediction:
    model_version: str  # models/{model}/versions/{version}: the version that answered
    outputs: dict[str, np.ndarray]
    version: int = 0  # its number


@dataclass
class Detection:
    model_version: str
    detections: Detections


def model_id(model: str) -> str:
    """'models/m' or 'm@alias' (a model followed through a named alias) -> 'm'."""
    return model.removeprefix("models/").partition("@")[0]


class Agent:
    def __init__(self, config: AgentConfig):
        if not config.models:
            raise ValueError("follow at least one model (--model NAME)")
        self.config = config
        self.agent_id = config.resolved_agent_id()
        self.metrics = Metrics()
        self.start_time = datetime.now(UTC)
        self.models: dict[str, ModelManager] = {}
        self._tasks: list[asyncio.Task] = []
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()
        self._listeners: list = []  # called with (ready: bool) on every change
        self._stopping = False
        self._report_refused: grpc.StatusCode | None = None  # why reports are refused, once logged

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        c = self.config
        c.cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache = BlobCache(c.cache_dir, c.cache_max_bytes)
        self.channel = aio_channel(  # the token on every call: the watch, downloads, reports
            c.registry,
            c.credentials,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self.agents_stub = ag_grpc.AgentServiceStub(self.channel)
        hooks = ManagerHooks(
            fetcher=Fetcher(self.cache, self.channel, actor=f"agent:{self.agent_id}"),
            options=RuntimeOptions(tuple(c.providers), c.intra_op_threads),
            metrics=self.metrics,
            backoff=Backoff(c.retry_initial, c.retry_max),
            on_change=self._on_change,
            keep_warm=c.keep_warm,
        )
        for m in c.models:
            self.models[model_id(m)] = ModelManager(model_id(m), hooks)
            self.metrics.follow(model_id(m))
        self.source = RegistrySource(
            self.channel,
            list(c.models),  # MODEL@ALIAS entries follow that alias
            StateFile(c.cache_dir / "state.json"),
            self._declare,
            actor=f"agent:{self.agent_id}",
            metrics=self.metrics,
        )
        self.metrics.watch_connected.set_function(lambda: 1.0 if self.source.connected else 0.0)
        self.source.restore()  # serve from the cache before the registry answers
        for mgr in self.models.values():
            mgr.task = asyncio.create_task(mgr.run(), name=f"manager:{mgr.model}")
            self._tasks.append(mgr.task)
        self._tasks.append(asyncio.create_task(self.source.run(), name="source"))
        self._tasks.append(asyncio.create_task(self._report_loop(), name="reporter"))
        self._on_change()

    async def stop(self) -> None:
        self._stopping = True  # the final report says this agent no longer serves
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.report_once(final=True), 2)
        await self.channel.close()

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def ready(self) -> bool:
        if self._stopping:
            return False
        return bool(self.models) and all(m.ready() for m in self.models.values())

    def add_listener(self, fn) -> None:
        self._listeners.append(fn)

    def _declare(self, model: str, desired: Desired) -> None:
        self.models[model].set_desired(desired)
        referenced = {s.sha256 for mgr in self.models.values() for s in mgr.desired.versions().values()}
        referenced |= {mv.spec.sha256 for mgr in self.models.values() for mv in mgr.versions.values()}
        with contextlib.suppress(OSError):
            self.cache.evict(referenced)

    def _on_change(self) -> None:
        self._changed.set()
        ready = self.ready
        if ready:
            self._ready.set()
        else:
            self._ready.clear()
        self.metrics.ready.set(1.0 if ready else 0.0)
        for fn in self._listeners:
            fn(ready)

    # ------------------------------------------------------------ inference

    def _manager(self, model: str) -> ModelManager:
        mgr = self.models.get(model_id(model))
        if mgr is None:
            raise ModelNotFollowed(
                f"this agent does not serve {model!r}; it follows {', '.join('models/' + m for m in self.models)} "
                "(start it with --model NAME for each model)"
            )
        return mgr

    async def predict(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        output_names: list[str] | None = None,
        routing_key: str = "",
        version: int = 0,
    ) -> Prediction:
        """Runs a tensor model: THE ONE PATH of every tensor request (InferenceService.Predict and
        the Open Inference Protocol's ModelInfer alike): route (the deployment's canary weighting
        and `routing_key` stickiness, or the pinned `version`), lease, check the inputs against the
        leased version's signature, run, record."""
        mgr = self._manager(model)
        with mgr.lease(routing_key, version) as mv:
            if tracing.enabled():  # tags the current span: the Predict RPC's (see served())
                tracing.set_attributes(served(mgr, mv))
            loader = mv.loader
            assert loader is not None  # only a loaded version is leased
            if not loader.tensors:
                raise WrongModelKind(
                    f"{mv.spec.name} is a detector ({mv.spec.format}); call Detect with an image instead of "
                    "Predict, or register its ONNX export to run it on tensors"
                )
            sig, name = loader.signature(), mv.spec.name

            def run() -> dict[str, np.ndarray]:  # a rejected request counts as the version's error
                check_request(sig, name, inputs, output_names)
                return loader.predict(inputs, output_names)

            outputs = await self._timed(mgr, mv, "predict", run)
            self._payload(mgr, mv, sum(a.nbytes for a in inputs.values()), sum(a.nbytes for a in outputs.values()))
            return Prediction(mv.spec.name, outputs, mv.version)

    def signature(self, model: str, version: int = 0) -> Signature:
        """The signature of the version a request would reach (`version` 0: the deployment's
        stable side while it is loaded, else whichever routing picks), with routing's errors."""
        mgr = self._manager(model)
        mv = mgr.route("", version) if version else mgr.route_stable()
        assert mv.loader is not None
        return mv.loader.signature()

    def loaded_versions(self, model: str, version: int = 0) -> list[int]:
        """The model's READY versions (NOT_FOUND for a model not followed); with `version`, that
        one only if it is READY."""
        ready = sorted(mv.version for mv in self._manager(model).ready())
        return [v for v in ready if v == version] if version else ready

    async def detect(
        self,
        model: str,
        image: bytes | np.ndarray,
        *,
        confidence: float = 0.25,
        iou: float = 0.7,
        max_detections: int = 300,
        routing_key: str = "",
    ) -> Detection:
        mgr = self._manager(model)
        with mgr.lease(routing_key) as mv:
            if tracing.enabled():
                tracing.set_attributes(served(mgr, mv))
            assert mv.loader is not None  # only a loaded version is leased
            if mv.loader.kind != "detector":
                raise WrongModelKind(
                    f"{mv.spec.name} is a tensor model; call Predict with named tensors instead of Detect"
                )
            loader = mv.loader

            def run() -> Detections:  # decoding and inference, off the event loop
                img = decode_image(bytes(image)) if isinstance(image, (bytes, bytearray)) else image
                return loader.detect(img, confidence, iou, max_detections)

            result = await self._timed(mgr, mv, "detect", run)
            self._payload(mgr, mv, len(image) if isinstance(image, (bytes, bytearray)) else image.nbytes, 0)
            return Detection(mv.spec.name, result)

    async def _timed(self, mgr: ModelManager, mv, method: str, fn):
        """Runs `fn` on a worker thread and records the outcome, the total time, and its
        split: queue (submitted -> the thread starts it) and compute (the call itself)."""
        begun = 0.0

        def timed_call():
            nonlocal begun
            begun = time.perf_counter()
            return fn()

        started = time.perf_counter()
        outcome = "ok"
        try:
            result = await asyncio.to_thread(timed_call)
        except Exception as e:
            mv.errors += 1
            outcome = getattr(getattr(e, "code", None), "name", "INTERNAL")
            raise
        finally:
            ended = time.perf_counter()
            elapsed = ended - started
            mv.requests += 1
            mv.latencies.append(elapsed)
            stats = self.metrics.inference.version(mgr.model, str(mv.version))
            stats.count(outcome)
            stats.duration.observe(elapsed)
            if begun:
                stats.queue.observe(begun - started)
                stats.compute.observe(ended - begun)
        return result

    def _payload(self, mgr: ModelManager, mv, size_in: int, size_out: int) -> None:
        stats = self.metrics.inference.version(mgr.model, str(mv.version))
        stats.payload_in.observe(size_in)
        if size_out:
            stats.payload_out.observe(size_out)

    # ------------------------------------------------------------ status

    def status(self, models: list[str] | None = None) -> ag.Agent:
        wanted = {model_id(m) for m in models} if models else None
        agent = ag.Agent(
            name=f"agents/{self.agent_id}",
            agent_id=self.agent_id,
            node=self.config.node,
            address=self.config.address,
            healthy=self.ready,
        )
        agent.start_time.FromDatetime(self.start_time)
        for name, mgr in sorted(self.models.items()):
            if wanted is not None and name not in wanted:
                continue
            entry = agent.models.add(model=f"models/{name}")
            standby = {mv.version for mv in mgr.standby()}  # loaded, taking no requests: not reported
            for mv in sorted(mgr.versions.values(), key=lambda v: -v.version):
                if mv.version in standby:
                    continue
                sv = entry.versions.add(
                    version=mv.version,
                    sha256=mv.spec.sha256,
                    state=STATE_TO_PROTO[mv.state],
                    error=mv.error,
                    desired=mv.desired,
                    attempts=mv.attempts,
                    download_seconds=mv.download_seconds,
                    load_seconds=mv.load_seconds,
                    request_count=mv.requests,
                    error_count=mv.errors,
                    p95_latency_ms=mv.p95_ms(),
                )
                sv.state_time.FromDatetime(mv.state_time)
                if mv.signature is not None and sv.state == ag.SERVED_VERSION_STATE_SERVING:
                    sv.signature.CopyFrom(mv.signature)
        return agent

    async def report_once(self, final: bool = False) -> bool:
        try:
            await self.agents_stub.ReportAgentStatus(
                ag.ReportAgentStatusRequest(agent=self.status()),
                metadata=(("x-modelreg-actor", f"agent:{self.agent_id}"),),
                timeout=5,
            )
            self._report_refused = None
            return True
        except grpc.aio.AioRpcError as e:
            if not final:
                refused = e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
                if refused and e.code() != self._report_refused:  # once per change, not every interval
                    log.warning(
                        "the registry refuses the agent's status reports (%s: %s); check --token-file and the "
                        "agent role of its principal",
                        e.code().name,
                        e.details(),
                    )
                else:
                    log.debug("status report failed: %s %s", e.code().name, e.details())
                self._report_refused = e.code() if refused else None
            return False

    async def _report_loop(self) -> None:
        while True:
            self._changed.clear()
            await self.report_once()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.config.report_interval)
            await asyncio.sleep(0.05)  # coalesce bursts of changes


def served(mgr: ModelManager, mv) -> dict[str, str | int]:
    """The span attributes of a request: the model, the version that serves it and the route
    (stable or canary). They go on the current span, which behind the inference server is the
    Predict/Detect RPC's SERVER span: one span per request, not a child per step, because
    recording and exporting a span costs tens of microseconds in the Python SDK, which is a
    measurable share of a small model's Predict (benchmarks/README.md, tracing)."""
    canary = mgr.desired.canary
    return {
        "modelreg.model": mgr.model,
        "modelreg.version": mv.version,
        "modelreg.version_name": mv.spec.name,
        "modelreg.route": "canary" if canary is not None and canary.version == mv.version else "stable",
    }


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> a BGR uint8 array (what ultralytics expects from OpenCV)."""
    if not data:
        raise BadInput("image is empty: send the JPEG or PNG file's bytes")
    import cv2

    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise BadInput(f"image ({len(data)} bytes) is not a JPEG or PNG that can be decoded")
    return img
