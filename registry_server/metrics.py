"""The registry's Prometheus metrics (prometheus-client), one `CollectorRegistry` per server.

gRPC, with go-grpc-prometheus's names (recorded and collected by `services.metrics`, when on):
    grpc_server_started_total{grpc_type,grpc_service,grpc_method}                counter
    grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}      counter
    grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}             histogram
    grpc_server_msg_received_total{grpc_type,grpc_service,grpc_method}           counter
    grpc_server_msg_sent_total{grpc_type,grpc_service,grpc_method}               counter
The registry's own, under `modelreg_registry_`:
    watch_streams                                 gauge      open WatchEvents streams
    events_total{type}                            counter    events committed (read by this process's hub)
    event_delivery_lag_seconds                    histogram  event commit -> sent to a watcher
    read_cache_{hits,misses,invalidations}_total  counter    the hot version cache
    read_cache_entries                            gauge
    db_pool_connections{state}                    gauge      asyncpg pool: in_use, idle
    db_pool_max_connections                       gauge
    db_round_trip_seconds                         histogram  `SELECT 1`, sampled every SAMPLE_INTERVAL
    artifact_bytes_total{store,direction}         counter    store: local | s3; direction: in | out
    artifact_upload_seconds{store}                histogram  a registration's bytes, first to last
    artifact_download_seconds{store}              histogram  a DownloadArtifact's bytes, first to last
    registrations_total{outcome}                  counter    outcome: ok or the error's gRPC code name
    promotions_total{stage,outcome}               counter
    group_commit_batch_size{queue}                histogram  items per group-committed transaction
    canary_verdicts_total{verdict}                counter    verdicts the judge applied: promote | abort
    agents{state}                                 gauge      serving | not_ready | stale (sampled)

Use cases and storage get this object and call counters directly (a prometheus counter
increment is a lock and an add); nothing here does I/O but the sampler task. LABEL VALUES
ARE BOUNDED: method names, codes, event types, stages, fixed words; never a model name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from registry_server.domain.access import SYSTEM
from registry_server.errors import RegistryError
from registry_server.storage.db import BACKEND_DOWN

if TYPE_CHECKING:
    from registry_server.read_cache import VersionCache
    from registry_server.usecases.agents import Agents

log = logging.getLogger("modelreg.metrics")

# No `_created` series: they double the series count and no dashboard reads them.
disable_created_metrics()

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DB_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
TRANSFER_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SAMPLE_INTERVAL = 10.0
AGENT_PAGE = 1000


def outcome_of(exc: BaseException | None) -> str:
    """'ok', or the gRPC code name a caller sees for `exc` (INVALID_ARGUMENT, NOT_FOUND, ...):
    the name of the error's class just below RegistryError, in SCREAMING_SNAKE_CASE."""
    if exc is None:
        return "ok"
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    if isinstance(exc, BACKEND_DOWN):
        return "UNAVAILABLE"
    if not isinstance(exc, RegistryError):
        return "INTERNAL"
    mro = type(exc).__mro__
    base = mro[mro.index(RegistryError) - 1] if RegistryError in mro[1:] else RegistryError
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base.__name__).upper()


class RegistryMetrics:
    """Every metric of one registry server. `store` labels the artifact metrics."""

    def __init__(self, store: str = "local") -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.store = store
        p = "modelreg_registry_"
        self.watch_streams = Gauge(p + "watch_streams", "Open WatchEvents streams.", registry=r)
        self.events = Counter(
            p + "events", "Events committed, read by this process's event hub.", ("type",), registry=r
        )
        self.event_lag = Histogram(
            p + "event_delivery_lag_seconds",
            "Event commit to its sending to a watcher.",
            registry=r,
            buckets=LAG_BUCKETS,
        )
        self.db_round_trip = Histogram(
            p + "db_round_trip_seconds",
            "Round trip of `SELECT 1` on a pooled connection.",
            registry=r,
            buckets=DB_BUCKETS,
        )
        self.artifact_bytes = Counter(
            p + "artifact_bytes", "Artifact bytes into and out of the blob store.", ("store", "direction"), registry=r
        )
        self.upload_seconds = Histogram(
            p + "artifact_upload_seconds",
            "A registration's artifact bytes, first to last, stored.",
            ("store",),
            registry=r,
            buckets=TRANSFER_BUCKETS,
        )
        self.download_seconds = Histogram(
            p + "artifact_download_seconds",
            "A download's bytes, first to last, sent.",
            ("store",),
            registry=r,
            buckets=TRANSFER_BUCKETS,
        )
        self.registrations = Counter(p + "registrations", "Version registrations by outcome.", ("outcome",), registry=r)
        self.promotions = Counter(
            p + "promotions",
            "Stage moves (PromoteModelVersion) by target stage and outcome.",
            ("stage", "outcome"),
            registry=r,
        )
        self.group_commit_batch = Histogram(
            p + "group_commit_batch_size",
            "Items committed together in one transaction.",
            ("queue",),
            registry=r,
            buckets=BATCH_BUCKETS,
        )
        self.canary_verdicts = Counter(
            p + "canary_verdicts", "Verdicts the canary judge applied.", ("verdict",), registry=r
        )
        self.agents = Gauge(p + "agents", "Serving agents by state (sampled).", ("state",), registry=r)
        for state in ("serving", "not_ready", "stale"):
            self.agents.labels(state).set(0)

    # ------------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def outcome(self, counter: Counter, **labels: str) -> Iterator[None]:
        """Counts the block's outcome on `counter` (ok, or the error's code) and re-raises."""
        try:
            yield
        except BaseException as e:
            counter.labels(**labels, outcome=outcome_of(e)).inc()
            raise
        counter.labels(**labels, outcome="ok").inc()

    def count_events(self, rows: Any) -> None:
        """The event hub's feed (None: events may have been missed; nothing to count)."""
        for row in rows or ():
            self.events.labels(row.type).inc()

    def watch_cache(self, cache: VersionCache) -> None:
        self.registry.register(_CacheCollector(cache))

    def watch_pool(self, pool: asyncpg.Pool) -> None:
        self.registry.register(_PoolCollector(pool))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ sampling

    async def sample(self, pool: asyncpg.Pool, agents: Agents, interval: float = SAMPLE_INTERVAL) -> None:
        """Every `interval` s: the database round trip and the agents by state. Runs until cancelled."""
        while True:
            try:
                started = time.perf_counter()
                await pool.fetchval("SELECT 1")
                self.db_round_trip.observe(time.perf_counter() - started)
                await self._count_agents(agents)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a lost database shows in the RPCs; keep sampling
                log.debug("metrics sample failed: %r", e)
            await asyncio.sleep(interval)

    async def _count_agents(self, agents: Agents) -> None:
        counts = dict.fromkeys(("serving", "not_ready", "stale"), 0)
        now, after = datetime.now(UTC), ""
        while True:
            batch, after = await agents.list(SYSTEM, after, AGENT_PAGE, "", include_stale=True)
            for a in batch:
                counts["stale" if agents.is_stale(a, now) else "serving" if a.healthy else "not_ready"] += 1
            if not after:
                break
        for state, n in counts.items():
            self.agents.labels(state).set(n)


class _CacheCollector(Collector):
    def __init__(self, cache: VersionCache):
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        c, p = self.cache, "modelreg_registry_read_cache_"
        yield CounterMetricFamily(p + "hits", "Version reads answered from the hot cache.", value=c.hits)
        yield CounterMetricFamily(p + "misses", "Version reads that went to Postgres.", value=c.misses)
        yield CounterMetricFamily(
            p + "invalidations", "Models dropped from the cache by events.", value=c.invalidations
        )
        yield GaugeMetricFamily(p + "entries", "Versions and aliases held in the cache.", value=c.size)


class _PoolCollector(Collector):
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        size, idle = self.pool.get_size(), self.pool.get_idle_size()
        g = GaugeMetricFamily(
            "modelreg_registry_db_pool_connections", "asyncpg pool connections, in use and idle.", labels=("state",)
        )
        g.add_metric(("in_use",), size - idle)
        g.add_metric(("idle",), idle)
        yield g
        yield GaugeMetricFamily(
            "modelreg_registry_db_pool_max_connections",
            "The asyncpg pool's size limit.",
            value=self.pool.get_max_size(),
        )
