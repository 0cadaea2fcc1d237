"""The manager: reconciles each model toward its desired versions, one policy action at a
time, and hands out leases on loaded versions.

    load:   LOADING -> fetch (cache / URL / stream) -> verify sha256 -> load -> warm up -> READY
    unload: UNLOADING (no new leases) -> wait until in-flight requests release their
            leases -> unload -> forgotten
    standby: a version no longer desired stays loaded (READY, not routed to) while it is
            one of the `keep_warm` most recently desired: desiring it again (a rollback)
            swaps it back in at once, with no fetch and no load

The swap is atomic: routing reads the READY set on the event loop, so a request sees the
old version or the new one, never neither. REQUESTS ONLY EVER REACH A READY VERSION.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelreg_runtime import tracing
from serving_agent import policy, signature_report
from serving_agent.errors import AgentError, NoVersionLoaded, VersionNotLoaded
from serving_agent.fetch import Fetcher
from serving_agent.loaders import Loader, RuntimeOptions, make_loader
from serving_agent.metrics import Metrics
from serving_agent.policy import Kind, State
from serving_agent.spec import Desired, VersionSpec

log = logging.getLogger("modelreg.agent")

LATENCY_WINDOW = 1000


@dataclass
class Backoff:
    initial: float = 1.0
    maximum: float = 60.0

    def delay(self, attempts: int) -> float:
        return min(self.maximum, self.initial * 2 ** max(0, attempts - 1))


@dataclass
class ManagedVersion:
    spec: VersionSpec
    state: State = State.NEW
    desired: bool = True
    error: str = ""
    attempts: int = 0
    retry_at: float = 0.0
    loader: Loader | None = None
    leases: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    last_desired: int = 0  # the ModelManager's set_desired counter when it was last desired
    download_seconds: float = 0.0
    desired_at: float = 0.0  # time.monotonic() when it was first desired (the swap's start)
    load_seconds: float = 0.0
    requests: int = 0
    errors: int = 0
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))
    state_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    # The loaded model's inputs and outputs (a modelreg.v1.Signature), reported while READY.
    signature: Any = None

    @property
    def version(self) -> int:
        return self.spec.version

    def p95_ms(self) -> float:
        if not self.latencies:
            return 0.0
        values = sorted(self.latencies)
        return values[min(len(values) - 1, int(0.95 * len(values)))] * 1000


class ModelManager:
    """One followed model: its versions, the reconcile loop and the router."""

    def __init__(self, model: str, agent_hooks: ManagerHooks):
        self.model = model
        self.hooks = agent_hooks
        self.desired = Desired()
        self.versions: dict[int, ManagedVersion] = {}
        self.generation = 0  # counts set_desired calls; orders versions by when they were desired
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    # ------------------------------------------------------------ desired state

    def set_desired(self, desired: Desired) -> None:
        """OMITTING A VERSION INSTRUCTS THE MANAGER TO UNLOAD IT."""
        standby = {mv.version for mv in self.standby()}
        self.desired = desired
        self.generation += 1
        wanted = desired.versions()
        for v, mv in self.versions.items():
            if v in wanted and v in standby:  # a warm standby swaps back in
                self.hooks.metrics.swaps.labels(self.model).inc()
                log.info("%s serving again from warm standby (no load)", mv.spec.name)
            mv.desired = v in wanted
            if mv.desired and mv.state is State.FAILED:
                mv.retry_at = min(mv.retry_at, time.monotonic() + 0.5)
        for v, spec in wanted.items():
            if v not in self.versions:
                self.versions[v] = ManagedVersion(spec=spec, desired_at=time.monotonic())
            self.versions[v].last_desired = self.generation
        self._count_standby()
        self.wake.set()
        self.hooks.changed()

    # ------------------------------------------------------------ routing

    def ready(self) -> list[ManagedVersion]:
        return [mv for mv in self.versions.values() if mv.state is State.READY]

    def route(self, key: str = "", version: int = 0) -> ManagedVersion:
        """The version a request goes to. `version` 0 follows the deployment: the canary by its
        weight (the same `key` always reaches the same side), else stable. A `version` pins that
        version if it is loaded (READY, serving or in warm standby), else VersionNotLoaded."""
        ready = {mv.version: mv for mv in self.ready()}
        if version:
            pinned = ready.get(version)
            if pinned is None:
                loaded = ", ".join(str(v) for v in sorted(ready)) or "none yet"
                raise VersionNotLoaded(
                    f"models/{self.model}/versions/{version} is not loaded on this agent; loaded versions: {loaded} "
                    "(leave the version empty to follow the deployment)"
                )
            return pinned
        if not ready:
            raise NoVersionLoaded(
                f"models/{self.model} has no version loaded yet on this agent; retry shortly "
                "(grpc.health.v1 reports SERVING once it has)"
            )
        d = self.desired
        stable = ready.get(d.stable.version) if d.stable else None
        canary = ready.get(d.canary.version) if d.canary and d.weight > 0 else None
        if stable and canary:
            bucket = (hash_key(key) if key else random.randrange(100)) % 100
            return canary if bucket < d.weight else stable
        if stable or canary:
            return stable or canary  # type: ignore[return-value]
        # the version that served last keeps serving until a desired one is READY
        return max(ready.values(), key=lambda mv: (mv.last_desired, mv.version))

    def route_stable(self) -> ManagedVersion:
        """What metadata describes: the stable version while it is loaded, else `route()`'s pick."""
        d = self.desired
        mv = self.versions.get(d.stable.version) if d.stable else None
        return mv if mv is not None and mv.state is State.READY else self.route()

    def standby(self) -> list[ManagedVersion]:
        """Loaded versions that take no requests now: kept warm for a quick swap back."""
        d = self.desired
        routable = {d.stable.version if d.stable else None, d.canary.version if d.canary and d.weight > 0 else None}
        ready = self.ready()
        serving = {mv.version for mv in ready if mv.version in routable}
        if not serving and ready:
            serving = {max(ready, key=lambda mv: (mv.last_desired, mv.version)).version}
        return [mv for mv in ready if mv.version not in serving]

    def _count_standby(self) -> None:
        """Publishes the versions serving and in standby, and the canary's routed share."""
        m, standby, d = self.hooks.metrics, self.standby(), self.desired
        ready = {mv.version for mv in self.ready()}
        m.standby.labels(self.model).set(len(standby))
        m.serving.labels(self.model).set(len(ready) - len(standby))
        stable = d.stable is not None and d.stable.version in ready
        canary = d.canary is not None and d.weight > 0 and d.canary.version in ready
        m.canary_share.labels(self.model).set(d.weight / 100 if stable and canary else 1.0 if canary else 0.0)

    @contextlib.contextmanager
    def lease(self, key: str = "", version: int = 0) -> Iterator[ManagedVersion]:
        """Routes (see `route`) and holds the version until the block ends: unload waits for it.
        EVERY INFERENCE REQUEST, WHICHEVER API IT CAME THROUGH, GOES THROUGH HERE."""
        mv = self.route(key, version)
        mv.leases += 1
        mv.drained.clear()
        try:
            yield mv
        finally:
            mv.leases -= 1
            if mv.leases == 0:
                mv.drained.set()

    # ------------------------------------------------------------ reconcile

    def snapshot(self) -> list[policy.VersionSnapshot]:
        now = time.monotonic()
        return [
            policy.VersionSnapshot(
                mv.version, mv.state, mv.desired, retry_due=now >= mv.retry_at, last_desired=mv.last_desired
            )
            for mv in self.versions.values()
        ]

    async def run(self) -> None:
        while True:
            action = policy.next_action(self.snapshot(), self.hooks.keep_warm)
            if action is None:
                self.wake.clear()
                waits = [
                    mv.retry_at - time.monotonic()
                    for mv in self.versions.values()
                    if mv.state is State.FAILED and mv.desired
                ]
                timeout = max(0.05, min(waits)) if waits else None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout)
                continue
            mv = self.versions[action.version]
            if action.kind is Kind.LOAD:
                await self._load(mv)
            elif action.kind is Kind.UNLOAD:
                await self._unload(mv)
            else:
                del self.versions[action.version]
                self.hooks.forgot(self.model, mv)
            self._count_standby()
            self.hooks.changed()

    def _set_state(self, mv: ManagedVersion, state: State, error: str = "") -> None:
        mv.state = state
        mv.error = error
        mv.state_time = datetime.now(UTC)
        self.hooks.state(self.model, mv)
        self.hooks.changed()

    async def _load(self, mv: ManagedVersion) -> None:
        """One swap, traced as `modelreg.swap` (download, verify, load, warm-up) when on."""
        with tracing.span("modelreg.swap", {"modelreg.model": self.model, "modelreg.version": mv.version}) as span:
            await self._swap(mv, span)

    async def _swap(self, mv: ManagedVersion, span) -> None:
        self._set_state(mv, State.LOADING)
        stage = "download"
        loader = None
        try:
            fetched = await self.hooks.fetcher.fetch(mv.spec)
            mv.download_seconds = fetched.download_seconds
            stage = "load"
            started = time.monotonic()
            loader = make_loader(fetched.path, mv.spec, self.hooks.options)
            with tracing.span("modelreg.load"):
                await asyncio.to_thread(loader.load)
            stage = "warm-up"
            with tracing.span("modelreg.warmup"):
                await asyncio.to_thread(loader.warmup)
            mv.load_seconds = time.monotonic() - started
            mv.signature = signature_report.of_loader(loader)
        except Exception as e:  # noqa: BLE001 - any failure: never served, reported, retried
            if loader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(loader.unload)
            mv.attempts += 1
            delay = self.hooks.backoff.delay(mv.attempts)
            mv.retry_at = time.monotonic() + delay
            message = e.message if isinstance(e, AgentError) else f"{type(e).__name__}: {e}"
            reason = f"{stage} failed: {message}"
            log.warning("%s: %s (attempt %d, retry in %.1fs)", mv.spec.name, reason, mv.attempts, delay)
            self.hooks.metrics.load_failures.labels(self.model, stage).inc()
            tracing.fail(span, reason)
            self._set_state(mv, State.FAILED, reason[:2000])
            return
        mv.loader = loader
        mv.attempts = 0
        self._set_state(mv, State.READY)  # the swap: routing sees it from here on
        m = self.hooks.metrics
        m.swaps.labels(self.model).inc()
        m.loads.labels(self.model).inc()
        m.load_duration.labels(self.model).observe(mv.load_seconds)
        m.swap_duration.labels(self.model).observe(time.monotonic() - mv.desired_at)
        if mv.download_seconds > 0:  # 0: a cache hit, nothing downloaded
            m.download_duration.labels(self.model).observe(mv.download_seconds)
            m.download_bytes.labels(self.model).inc(mv.spec.size_bytes)
        log.info("%s serving (download %.2fs, load+warm-up %.2fs)", mv.spec.name, mv.download_seconds, mv.load_seconds)

    async def _unload(self, mv: ManagedVersion) -> None:
        self._set_state(mv, State.UNLOADING)  # no new leases from here on
        if mv.leases:
            await mv.drained.wait()
        loader, mv.loader = mv.loader, None
        if loader is not None:
            await asyncio.to_thread(loader.unload)
        log.info("%s unloaded", mv.spec.name)
        if mv.desired:  # desired again while it drained (a quick rollback): load it afresh
            self._set_state(mv, State.NEW)
            return
        del self.versions[mv.version]
        self.hooks.forgot(self.model, mv)


class ManagerHooks:
    """What a ModelManager needs from the agent around it."""

    def __init__(
        self,
        fetcher: Fetcher,
        options: RuntimeOptions,
        metrics: Metrics,
        backoff: Backoff,
        on_change: Callable[[], None],
        keep_warm: int = 0,
    ):
        self.fetcher = fetcher
        self.keep_warm = keep_warm
        self.options = options
        self.metrics = metrics
        self.backoff = backoff
        self._on_change = on_change

    def changed(self) -> None:
        self._on_change()

    def state(self, model: str, mv: ManagedVersion) -> None:
        for s in State:
            self.metrics.version_state.labels(model, str(mv.version), s.value).set(1.0 if s is mv.state else 0.0)

    def forgot(self, model: str, mv: ManagedVersion) -> None:
        self.metrics.forget_version(model, str(mv.version), [s.value for s in State])


def hash_key(key: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
