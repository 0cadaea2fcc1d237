"""OpenTelemetry traces: one trace from an app's span through the SDK, the registry, Postgres
and the blob store; a Predict span in a real agent tagged with the version it served; off
(and importing nothing) unless OTEL_* asks for it.

The registry runs in-process (conftest's ThreadedRegistry) with a TracerProvider that keeps
spans in the SDK's InMemorySpanExporter, installed through `modelreg_runtime.tracing.install`.
The agent is a real `modelreg agent` process configured only by the standard variables
(OTEL_EXPORTER_OTLP_ENDPOINT), exporting over OTLP/gRPC to a collector this test runs on
127.0.0.1 with opentelemetry-proto's TraceService.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from agent_helpers import onnx_scale_model, wait_until
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_helpers import attrs as _attrs
from otlp_helpers import running_collector

from modelreg import Client, errors
from modelreg_runtime import tracing

REGISTER = "modelreg.v1.RegistryService/RegisterModelVersion"
PREDICT = "modelreg.v1.InferenceService/Predict"


@pytest.fixture(scope="module")
def provider():
    """The process's tracer provider (OpenTelemetry allows one), spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.fail("another tracer provider was installed earlier in this process")
    provider.exporter = exporter  # type: ignore[attr-defined]
    yield provider
    tracing.uninstall()
    provider.shutdown()  # later tests in this process record nothing


@pytest.fixture
def spans(provider) -> InMemorySpanExporter:
    exporter = provider.exporter
    tracing.install(provider)
    exporter.clear()
    yield exporter
    tracing.uninstall()
    exporter.clear()


def _by_name(found: tuple[ReadableSpan, ...], name: str, kind: trace.SpanKind | None = None) -> ReadableSpan:
    matches = [s for s in found if s.name == name and (kind is None or s.kind == kind)]
    assert len(matches) == 1, f"expected one {name} span, got {[s.name for s in found]}"
    return matches[0]


def test_a_registration_is_one_trace_from_the_sdk_to_the_blob_store(spans, make_registry):
    registry = make_registry()  # started with tracing on: its RPCs get server spans
    app = trace.get_tracer("the-app")
    with Client(registry.address, actor="alice") as client, app.start_as_current_span("train-and-register") as root:
        v = client.register("traced", onnx_scale_model(1.0), filename="traced.onnx")
    assert v.version == 1

    names = ("blobstore.write", "postgres.transaction", "blobstore.commit", "events.emit")
    wait_until(lambda: {s.name for s in spans.get_finished_spans()} >= {REGISTER, *names}, 10, what="spans")
    found = spans.get_finished_spans()
    client_span = _by_name(found, REGISTER, trace.SpanKind.CLIENT)
    server_span = _by_name(found, REGISTER, trace.SpanKind.SERVER)
    write, commit = _by_name(found, "blobstore.write"), _by_name(found, "blobstore.commit")
    # Two transactions: the model is created on the way (create_model), then the version.
    txs = {s.context.span_id: s for s in found if s.name == "postgres.transaction"}
    emits = [s for s in found if s.name == "events.emit"]
    assert len(txs) == 2 and len(emits) == 2

    trace_id = root.get_span_context().trace_id
    for s in (client_span, server_span, write, commit, *txs.values(), *emits):
        assert s.context.trace_id == trace_id, f"{s.name} is in another trace"
    # client -> server (through traceparent) -> Postgres transaction -> blob store commit
    assert client_span.parent.span_id == root.get_span_context().span_id
    assert server_span.parent.span_id == client_span.context.span_id
    assert server_span.parent.is_remote
    assert write.parent.span_id == server_span.context.span_id
    assert all(tx.parent.span_id == server_span.context.span_id for tx in txs.values())
    assert commit.parent.span_id in txs
    assert all(emit.parent.span_id in txs for emit in emits)
    tx = txs[commit.parent.span_id]
    assert write.end_time <= tx.start_time  # the bytes are stored before the transaction that adopts them
    assert server_span.attributes["rpc.grpc.status_code"] == 0
    assert server_span.attributes["enduser.id"] == "alice"
    assert write.attributes["modelreg.bytes"] == len(onnx_scale_model(1.0))
    assert tx.attributes["db.system"] == "postgresql"


def test_a_failed_call_marks_its_server_span(spans, make_registry):
    registry = make_registry()
    with Client(registry.address) as client, pytest.raises(errors.NotFound, match="does not exist"):
        client.get_version("missing", 1)
    server = wait_until(
        lambda: [
            s
            for s in spans.get_finished_spans()
            if s.kind == trace.SpanKind.SERVER and s.name.endswith("/GetModelVersion")
        ],
        10,
        what="the server span",
    )[0]
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_a_future_call_is_not_waited_for_by_its_client_span(spans, make_registry):
    """`stub.X.future(...)` returns at once with tracing on; the client span ends with the call."""
    from modelreg.v1 import registry_service_pb2 as rs

    registry = make_registry()
    release = threading.Event()

    def requests():
        release.wait(20)  # the call cannot complete before this
        yield rs.RegisterModelVersionRequest()

    with Client(registry.address) as client, trace.get_tracer("app").start_as_current_span("app"):
        started = time.monotonic()
        call = client.stub.RegisterModelVersion.future(requests(), timeout=30)
        assert time.monotonic() - started < 5
        release.set()
        assert call.exception(30).code() == grpc.StatusCode.INVALID_ARGUMENT
    span = wait_until(
        lambda: [s for s in spans.get_finished_spans() if s.name == REGISTER and s.kind == trace.SpanKind.CLIENT],
        10,
        what="the client span",
    )[0]
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_a_download_traces_the_blob_store_read(spans, make_registry, tmp_path):
    registry = make_registry()
    with Client(registry.address) as client:
        client.register("dl", b"x" * 100_000, filename="dl.bin")
        spans.clear()
        client.download("dl", 1, dest=tmp_path)
    wait_until(lambda: {s.name for s in spans.get_finished_spans()} >= {"blobstore.read"}, 10, what="read span")
    found = spans.get_finished_spans()
    read = _by_name(found, "blobstore.read")
    server = _by_name(found, "modelreg.v1.RegistryService/DownloadArtifact", trace.SpanKind.SERVER)
    assert read.parent.span_id == server.context.span_id
    assert read.attributes["modelreg.bytes"] == 100_000


# ---------------------------------------------------------------- a real agent over OTLP


@pytest.fixture
def collector():
    yield from running_collector()


def test_a_predict_span_is_tagged_with_the_version_served(spans, registry, agents, collector):
    with Client(registry.address) as client:
        v1 = client.register("scaler", onnx_scale_model(1.0), filename="scaler.onnx")
        client.promote("scaler", v1.version, "production")
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    agent = agents(registry.address, ["scaler"], env=otel)
    agent.wait_serving()

    app = trace.get_tracer("the-app")
    with agent.client() as inference, app.start_as_current_span("handle-request") as root:
        r = inference.predict("scaler", {"x": np.ones((1, 4), np.float32)})
    assert r.model_version == "models/scaler/versions/1"

    (resource, predict), *_ = wait_until(lambda: collector.named(PREDICT), 20, what="the agent's Predict span")
    assert resource["service.name"] == "modelreg-agent"
    assert _attrs(predict)["modelreg.model"] == "scaler"
    assert _attrs(predict)["modelreg.version"] == v1.version
    assert _attrs(predict)["modelreg.version_name"] == "models/scaler/versions/1"
    assert _attrs(predict)["modelreg.route"] == "stable"
    assert _attrs(predict)["rpc.grpc.status_code"] == 0
    # The app's trace continues in the agent: its Predict server span is the child of the
    # app's client span.
    client_span = _by_name(spans.get_finished_spans(), PREDICT, trace.SpanKind.CLIENT)
    assert int.from_bytes(predict.trace_id, "big") == root.get_span_context().trace_id
    assert int.from_bytes(predict.parent_span_id, "big") == client_span.context.span_id

    # The swap that loaded v1 is its own trace: download (and verify), load, warm-up.
    (_, swap), *_ = collector.named("modelreg.swap")
    assert _attrs(swap)["modelreg.version"] == v1.version
    for stage in ("modelreg.download", "modelreg.verify", "modelreg.load", "modelreg.warmup"):
        assert any(s.trace_id == swap.trace_id for _, s in collector.named(stage)), f"no {stage} in the swap"


# ---------------------------------------------------------------- off unless asked


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),
    ],
)
def test_tracing_is_requested_only_by_the_otel_variables(env, on):
    assert tracing.requested(env) is on


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_with_nothing_set_no_opentelemetry_module_is_loaded():
    code = (
        "import sys, modelreg_runtime.tracing as t\n"
        "assert t.setup(t.REGISTRY) is False and t.server_interceptors() == []\n"
        "import registry_server.app, serving_agent.server, modelreg\n"
        "from modelreg import Client\n"
        "Client('127.0.0.1:1').close()\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr


def test_without_the_extra_one_warning_names_the_pip_command():
    code = (
        "import logging, sys\n"
        "sys.modules['opentelemetry'] = None  # as if modelreg[otel] were not installed\n"
        "logging.basicConfig(format='%(levelname)s %(message)s')\n"
        "import modelreg_runtime.tracing as t\n"
        "assert t.setup(t.AGENT) is False and not t.enabled()\n"
    )
    proc = _python(code, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("WARNING") and "pip install 'modelreg[otel]'" in lines[0]


def test_spans_cost_nothing_when_off():
    tracing.uninstall()
    assert tracing.span("x") is tracing.span("y")  # the one shared no-op
    assert tracing.start("x") is None and tracing.current_ids() is None
    assert tracing.inject((("k", "v"),)) == (("k", "v"),)
    started = time.perf_counter()
    for _ in range(10_000):
        with tracing.span("x"):
            pass
    assert time.perf_counter() - started < 0.5
