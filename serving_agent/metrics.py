"""The agent's Prometheus metrics (prometheus-client), one `CollectorRegistry` per Agent.

Inference follows Triton's families (nv_inference_*), under `modelreg_inference_`:
    modelreg_inference_requests_total{model,version,outcome}            counter (outcome: ok or a gRPC code)
    modelreg_inference_duration_seconds{model,version}                  histogram (lease to result)
    modelreg_inference_queue_duration_seconds{model,version}            histogram (waiting for a worker thread)
    modelreg_inference_compute_duration_seconds{model,version}          histogram (the runtime's own time)
    modelreg_inference_payload_bytes{model,version,direction}           histogram (tensor/image bytes in, out)
The agent's life cycle, under `modelreg_agent_`:
    modelreg_agent_swaps_total{model}                                   counter (a version started serving)
    modelreg_agent_loads_total{model}                                   counter (fetch + load + warm-up)
    modelreg_agent_load_failures_total{model,stage}                     counter
    modelreg_agent_load_duration_seconds{model}                         histogram (load + warm-up)
    modelreg_agent_swap_duration_seconds{model}                         histogram (desired -> serving)
    modelreg_agent_download_duration_seconds{model}                     histogram (downloads only, no cache hits)
    modelreg_agent_download_bytes_total{model}                          counter
    modelreg_agent_serving_versions{model}                              gauge (versions taking requests)
    modelreg_agent_standby_versions{model}                              gauge (loaded, kept warm, not routed)
    modelreg_agent_canary_share{model}                                  gauge (0..1, the canary's routed share)
    modelreg_agent_version_state{model,version,state}                   gauge (1 for the current state)
    modelreg_agent_ready                                                gauge (1 once every model serves)
    modelreg_agent_watch_connected                                      gauge (1 while the watch stream is open)
    modelreg_agent_watch_reconnects_total                               counter
    modelreg_agent_watch_lag_seconds                                    histogram (event commit -> received)

LABEL VALUES ARE BOUNDED: a model the agent follows, a version it holds, a fixed word. No
request data ever becomes a label. A version's series are removed when the version is
forgotten, so the series count follows what the agent holds.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from modelreg_runtime.loop_histogram import LoopHistogram

# No `_created` series: they double the series count and no dashboard reads them.
disable_created_metrics()

LOAD_STAGES = ("download", "load", "warm-up")  # where a load can fail: modelreg_agent_load_failures_total{stage}
# Inference: 100 us .. 10 s (Triton's and TF Serving's requests are in this range).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# Loads, downloads and swaps: 10 ms .. 10 min.
SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Payloads: 64 B .. 64 MiB, by powers of 4.
BYTE_BUCKETS = tuple(float(64 * 4**i) for i in range(11))
# Watch lag: 1 ms .. 1 min.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)


class Metrics:
    """Every metric of one agent, registered in its own registry (several agents in one
    process, as in tests and benchmarks, do not collide)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.inference = InferenceCollector()
        r.register(self.inference)
        self.swaps = Counter("modelreg_agent_swaps", "Versions that started serving (swaps).", ("model",), registry=r)
        self.loads = Counter(
            "modelreg_agent_loads",
            "Versions loaded and warmed up (a warm standby swap is no load).",
            ("model",),
            registry=r,
        )
        self.load_failures = Counter(
            "modelreg_agent_load_failures", "Failed load attempts, by stage.", ("model", "stage"), registry=r
        )
        self.load_duration = Histogram(
            "modelreg_agent_load_duration_seconds",
            "Load and warm-up time of a version.",
            ("model",),
            registry=r,
            buckets=SLOW_BUCKETS,
        )
        self.swap_duration = Histogram(
            "modelreg_agent_swap_duration_seconds",
            "From a version being desired to it serving.",
            ("model",),
            registry=r,
            buckets=SLOW_BUCKETS,
        )
        self.download_duration = Histogram(
            "modelreg_agent_download_duration_seconds",
            "Download time of a version (cache hits excluded).",
            ("model",),
            registry=r,
            buckets=SLOW_BUCKETS,
        )
        self.download_bytes = Counter(
            "modelreg_agent_download_bytes", "Artifact bytes downloaded from the registry.", ("model",), registry=r
        )
        self.serving = Gauge("modelreg_agent_serving_versions", "Versions taking requests.", ("model",), registry=r)
        self.standby = Gauge(
            "modelreg_agent_standby_versions",
            "Versions kept loaded for a quick swap back, taking no requests.",
            ("model",),
            registry=r,
        )
        self.canary_share = Gauge(
            "modelreg_agent_canary_share",
            "Share of requests routed to the canary (0 when none serves).",
            ("model",),
            registry=r,
        )
        self.version_state = Gauge(
            "modelreg_agent_version_state",
            "1 for the state each held version is in.",
            ("model", "version", "state"),
            registry=r,
        )
        self.ready = Gauge("modelreg_agent_ready", "1 when every followed model has a version serving.", registry=r)
        self.watch_connected = Gauge(
            "modelreg_agent_watch_connected", "1 while the watch stream to the registry is open.", registry=r
        )
        self.watch_reconnects = Counter(
            "modelreg_agent_watch_reconnects", "Reconnects of the watch stream to the registry.", registry=r
        )
        self.watch_lag = Histogram(
            "modelreg_agent_watch_lag_seconds",
            "Event commit in the registry to its arrival here.",
            registry=r,
            buckets=LAG_BUCKETS,
        )

    def follow(self, model: str) -> None:
        """Creates a followed model's series at zero, so a rate() or increase() over them
        works before the first swap or failure (Prometheus's advice for labelled counters)."""
        for c in (self.swaps, self.loads, self.download_bytes):
            c.labels(model)
        for stage in LOAD_STAGES:
            self.load_failures.labels(model, stage)
        for g in (self.serving, self.standby, self.canary_share):
            g.labels(model)

    def forget_version(self, model: str, version: str, states: list[str]) -> None:
        """Drops the series of a version the agent no longer holds."""
        for s in states:
            _remove(self.version_state, model, version, s)
        self.inference.forget(model, version)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


class VersionStats:
    """The inference counts of one version. Bumped only on the event loop's thread (the
    agent records after the worker thread returns), rendered at scrape time."""

    __slots__ = ("outcomes", "duration", "queue", "compute", "payload_in", "payload_out")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.duration = LoopHistogram(LATENCY_BUCKETS)
        self.queue = LoopHistogram(LATENCY_BUCKETS)
        self.compute = LoopHistogram(LATENCY_BUCKETS)
        self.payload_in = LoopHistogram(BYTE_BUCKETS)
        self.payload_out = LoopHistogram(BYTE_BUCKETS)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class InferenceCollector(Collector):
    """modelreg_inference_*: plain counts per (model, version) on the request path (a
    prometheus_client child per observation costs ~2.5 us with its lock; five per request
    were 1-2 % of a tiny model's Predict), turned into families when scraped."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], VersionStats] = {}

    def version(self, model: str, version: str) -> VersionStats:
        stats = self._versions.get((model, version))
        if stats is None:
            stats = self._versions[(model, version)] = VersionStats()
        return stats

    def forget(self, model: str, version: str) -> None:
        self._versions.pop((model, version), None)

    def collect(self) -> Iterator[Metric]:
        mv = ["model", "version"]
        requests = CounterMetricFamily(
            "modelreg_inference_requests", "Inference requests, by version served and outcome.", labels=[*mv, "outcome"]
        )
        hists = {
            "duration": HistogramMetricFamily(
                "modelreg_inference_duration_seconds", "Inference latency, lease to result.", labels=mv
            ),
            "queue": HistogramMetricFamily(
                "modelreg_inference_queue_duration_seconds", "Time a request waited for a worker thread.", labels=mv
            ),
            "compute": HistogramMetricFamily(
                "modelreg_inference_compute_duration_seconds",
                "Time the runtime took (decode, run, post-process).",
                labels=mv,
            ),
        }
        payload = HistogramMetricFamily(
            "modelreg_inference_payload_bytes",
            "Tensor or image bytes per request, in and out.",
            labels=[*mv, "direction"],
        )
        for (model, version), s in list(self._versions.items()):
            for outcome, n in list(s.outcomes.items()):
                requests.add_metric([model, version, outcome], n)
            for name, family in hists.items():
                h: LoopHistogram = getattr(s, name)
                family.add_metric([model, version], h.cumulative(), h.total)
            for direction, h in (("in", s.payload_in), ("out", s.payload_out)):
                if any(h.counts):
                    payload.add_metric([model, version, direction], h.cumulative(), h.total)
        yield from (requests, *hists.values(), payload)
