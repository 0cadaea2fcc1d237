"""OpenTelemetry traces for the two long-running processes, off unless the environment asks.

`setup(service)` runs once at start-up. Tracing is on when the standard variables ask for it
(`requested`): OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or
OTEL_TRACES_EXPORTER naming an exporter (otlp, console); OTEL_SDK_DISABLED=true wins. With
nothing set this module imports nothing beyond the standard library and every `span()` is
one shared no-op context manager, so the hot path pays a function call and no SDK.

The OpenTelemetry SDK is the optional extra `modelreg[otel]`. When the environment asks for
tracing but the extra is missing, `setup` logs ONE warning naming the pip command and the
process runs untraced.

The SDK's own environment variables keep their meaning (OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_* for the exporter, OTEL_BSP_* for batching,
OTEL_TRACES_SAMPLER*, OTEL_PROPAGATORS); the service name defaults to `modelreg-registry` or
`modelreg-agent`.

`install(provider)` is the hook for tests and embedders: it enables tracing with a provider
the caller built (an in-memory exporter, say) instead of one from the environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger("modelreg.tracing")

REGISTRY = "modelreg-registry"
AGENT = "modelreg-agent"
EXTRA_HINT = "pip install 'modelreg[otel]'"

_NOOP = contextlib.nullcontext()
_tracer: Any = None  # an opentelemetry Tracer once tracing is on
_provider: Any = None  # the provider `setup` built (shut down by `shutdown`)


def requested(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard OTEL_* variables ask this process to export traces."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if exporters:
        return any(e != "none" for e in exporters)
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def enabled() -> bool:
    return _tracer is not None


def setup(service: str, env: Mapping[str, str] = os.environ) -> bool:
    """Turns tracing on for this process when the environment asks for it; returns whether
    it is on. Without the `otel` extra it logs one warning and returns False."""
    global _provider
    if _tracer is not None or not requested(env):
        return _tracer is not None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_* asks for traces but the OpenTelemetry SDK is not installed: %s", EXTRA_HINT)
        return False
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in _exporters(env):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    install(provider)
    return True


def _exporters(env: Mapping[str, str]) -> list[Any]:
    names = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()] or ["otlp"]
    out: list[Any] = []
    for name in names:
        if name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
            if protocol.strip().lower() != "grpc":
                log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: traces go over OTLP/gRPC", protocol)
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("the OTLP/gRPC span exporter is not installed: %s", EXTRA_HINT)
                continue
            out.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        elif name != "none":
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported (use otlp, console or none)", name)
    return out


def install(provider: Any) -> None:
    """Enables tracing with `provider` (an opentelemetry.sdk.trace.TracerProvider). It
    becomes the global provider unless one is already set (OpenTelemetry allows one per
    process), so the SDK's client spans and ours share it."""
    global _tracer
    from opentelemetry import trace

    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("modelreg")


def uninstall() -> None:
    """Turns tracing off again (tests); the global provider stays as it was."""
    global _tracer
    _tracer = None


def shutdown() -> None:
    """Flushes and stops the exporters `setup` started (at process exit)."""
    if _provider is not None:
        _provider.shutdown()


def span(name: str, attributes: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one for the duration of a `with` block, or a shared no-op
    context manager when tracing is off. Yields the span (None when off)."""
    if _tracer is None:
        return _NOOP
    return _tracer.start_as_current_span(name, attributes=attributes)


def start(name: str, attributes: Mapping[str, Any] | None = None) -> Any:
    """A started child span that is NOT made current (for spans that outlive a `with` block,
    such as a streamed read); the caller calls `.end()`. None when tracing is off."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, attributes=attributes)


def set_attributes(attributes: Mapping[str, Any]) -> None:
    """Sets attributes on the current span (the RPC's, say); nothing when tracing is off."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(attributes)


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span as lowercase hex, or None (off, or no span)."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def inject(metadata: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """`metadata` plus the W3C trace context of the current span (`traceparent`), for an
    outgoing gRPC call; `metadata` unchanged when tracing is off."""
    if _tracer is None:
        return tuple(metadata)
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return (*metadata, *carrier.items())


def server_interceptors() -> list[Any]:
    """The gRPC aio server interceptors that trace each RPC: none when tracing is off."""
    if _tracer is None:
        return []
    from modelreg_runtime.grpc_tracing import TracingInterceptor

    return [TracingInterceptor(_tracer)]


def fail(span: Any, message: str) -> None:
    """Marks `span` (from `span()`; None when off) as failed with `message`."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, message[:500]))
