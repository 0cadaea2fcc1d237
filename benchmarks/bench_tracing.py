"""Issue 14's tracing cost: tracing on (every request sampled, spans exported over OTLP/gRPC to
a receiver on loopback) vs off, side by side in one run.

Registry: GetModelVersion by number at 16 clients (the `read_throughput` load) against three
`modelreg server` processes on the same database: one untraced, one started with
OTEL_EXPORTER_OTLP_ENDPOINT (every request sampled, the SDK's default), one that also sets
OTEL_TRACES_SAMPLER=parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG=0.1. Agent: Predict
p50 at 1 client on the tiny ONNX model against three `modelreg agent` processes, configured
the same three ways. Subjects alternate (off, on, on, off,
...), medians over repetitions. The receiver runs in the harness process (opentelemetry-proto's
TraceService, counting the spans it is sent), so its CPU competes for the same cores, as a
collector on the same host would. Goal: on within 1.15× of off (throughput off/on, p50 on/off).
"""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path

from benchmarks import fixtures
from benchmarks.common import alternate, med, ratio, reps_detail
from benchmarks.env import PY, free_port, log, wait_for_port
from benchmarks.report import Row, not_measurable

NAME = "tracing"
GOALS = "14"
MODEL = "bench-read"
AGENT_MODEL = "bench-tracing-tiny"
LIMIT = 1.15


class Receiver:
    """An OTLP/gRPC trace receiver on 127.0.0.1 that counts the spans it is sent."""

    def __init__(self) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802 - the proto's method name
                n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
                with receiver.lock:
                    receiver.spans += n
                return trace_service_pb2.ExportTraceServiceResponse()

        self.lock = threading.Lock()
        self.spans = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def env(self) -> dict[str, str]:
        # Batches go out at 512 spans or after OTEL_BSP_SCHEDULE_DELAY (5 s by default; 1 s here
        # so the harness need not wait long for the last batch before it counts).
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "1000",
        }

    def count(self) -> int:
        with self.lock:
            return self.spans


def _untraced_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def _agent(env, name: str, otel: dict[str, str]) -> str:
    port = free_port()
    cmd = [
        str(Path(PY).parent / "modelreg"),
        "agent",
        "--registry",
        env.ours,
        "--listen",
        f"127.0.0.1:{port}",
        "--cache-dir",
        str(env.tmp / f"tracing-{name}"),
        "--log-level",
        "WARNING",
        "--report-interval",
        "5",
        "--model",
        AGENT_MODEL,
        "--metrics-listen",  # the same on every side: only tracing differs
        "off",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=str(env.tmp),
        env={**_untraced_env(), **otel},
        stdout=subprocess.DEVNULL,
        stderr=open(env.tmp / f"tracing-{name}.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    env.procs.append(proc)
    wait_for_port(port, 120, proc)
    return f"127.0.0.1:{port}"


def _wait_serving(address: str, timeout: float = 120) -> None:
    from modelreg.inference import InferenceClient

    deadline = time.monotonic() + timeout
    with InferenceClient(address, timeout=5) as c:
        while not c.is_serving():
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent {address} is not SERVING after {timeout}s")
            time.sleep(0.1)


def run(env, cfg) -> list[Row]:
    try:
        import onnx  # noqa: F401
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc  # noqa: F401
        from opentelemetry.sdk.trace import TracerProvider  # noqa: F401
    except ImportError as e:
        return [not_measurable(GOALS, NAME, "tracing on vs off", f"the otel and quickstart extras ({e})")]
    receiver = Receiver()
    try:
        return _measure(env, cfg, receiver)
    finally:
        receiver.server.stop(0)


def _measure(env, cfg, receiver: Receiver) -> list[Row]:
    from benchmarks.bench_agent import onnx_model
    from modelreg import Client

    n = 20
    fixtures.ours_model(env, MODEL, n, production=n // 2)
    # More server processes on the same database, with tracing on: every request sampled, and
    # one request in ten (what a busy service usually runs with).
    sampled = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    _, traced = env.spawn_server("modelreg-traced", env.ours_url, receiver.env())
    _, traced_10 = env.spawn_server("modelreg-traced-10", env.ours_url, {**receiver.env(), **sampled})
    with Client(env.ours, actor="bench") as c:
        v = c.register(AGENT_MODEL, onnx_model(16, 7), format="onnx", filename="model.onnx")
        c.promote(AGENT_MODEL, v.version, "production", reason="bench seed")
    agents = {
        "off": _agent(env, "off", {}),
        "on": _agent(env, "on", receiver.env()),
        "on_10": _agent(env, "on-10", {**receiver.env(), **sampled}),
    }
    for address in agents.values():
        _wait_serving(address)

    names = [f"models/{MODEL}/versions/{i}" for i in range(1, n + 1)]
    reads = {"op": "get", "names": names, "concurrency": cfg.clients, "duration": cfg.duration}
    predict = {"op": "predict", "model": AGENT_MODEL, "concurrency": 1, "duration": cfg.lat_duration}
    before = receiver.count()
    res = alternate(
        cfg.reps,
        {
            "reads_off": lambda: env.load(dict(reads, target=env.ours), procs=cfg.ours_procs),
            "reads_on": lambda: env.load(dict(reads, target=traced), procs=cfg.ours_procs),
            "reads_on_10": lambda: env.load(dict(reads, target=traced_10), procs=cfg.ours_procs),
            "predict_off": lambda: env.load(dict(predict, target=agents["off"])),
            "predict_on": lambda: env.load(dict(predict, target=agents["on"])),
            "predict_on_10": lambda: env.load(dict(predict, target=agents["on_10"])),
        },
    )
    time.sleep(2)  # the batch processors' last export (OTEL_BSP_SCHEDULE_DELAY)
    exported = receiver.count() - before
    log(f"  the receiver got {exported} spans")
    detail = {
        "throughput_per_rep": reps_detail(res, "throughput"),
        "p50_us_per_rep": reps_detail(res, "p50_us"),
        "errors": {k: sum(r["errors"] for r in v) for k, v in res.items()},
        "spans_exported": exported,
    }
    off_t, off_p = med(res, "reads_off", "throughput"), med(res, "predict_off", "p50_us")
    rows: list[Row] = []
    for key, label in (("on", "every request sampled"), ("on_10", "10% sampled")):
        on_t, on_p = med(res, f"reads_{key}", "throughput"), med(res, f"predict_{key}", "p50_us")
        rows.append(
            Row(
                goal=GOALS,
                bench=NAME,
                figure=f"GetModelVersion throughput, {cfg.clients} clients, tracing on (OTLP, {label}) vs off",
                ours=on_t,
                unit="req/s",
                ref=off_t,
                ref_label="tracing off",
                ratio=ratio(off_t, on_t),
                ratio_of="off/on",
                target=("<=", LIMIT),
                note=f"{exported} spans received over OTLP/gRPC on loopback in all",
                details=detail,
            )
        )
        rows.append(
            Row(
                goal=GOALS,
                bench=NAME,
                figure=f"Predict p50 via agent, tiny model, tracing on (OTLP, {label}) vs off",
                ours=on_p,
                unit="µs",
                ref=off_p,
                ref_label="tracing off",
                ratio=ratio(on_p, off_p),
                ratio_of="on/off",
                target=("<=", LIMIT),
                note=f"adds {on_p - off_p:.0f} µs per request",
                details=detail,
            )
        )
    return rows
