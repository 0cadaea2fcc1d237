"""W3C trace context from an app's OpenTelemetry spans into the registry and the agent.

OpenTelemetry is optional for the SDK: `traced(channel)` returns the channel unchanged when
the `opentelemetry` package is not installed. When it is, every call has a CLIENT span
of the app's tracer provider (`modelreg.v1.RegistryService/RegisterModelVersion`, with
rpc.system, rpc.service, rpc.method and rpc.grpc.status_code) and sends its `traceparent`
in the call's metadata, so the server's span is that span's child. Until something in the
process has imported opentelemetry (the app configuring its tracing), a call does nothing
more than check that it has not: no span can be active before then.

Only the OpenTelemetry API is used (what a library should use): with no SDK configured its
spans are no-ops. A streamed response's span covers starting the call, not reading it.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _ClientDetails(_Details, grpc.ClientCallDetails):
    pass


def _available() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except ImportError:
        return False


def traced(channel: grpc.Channel) -> grpc.Channel:
    """`channel` with the tracing interceptor when opentelemetry is installed."""
    if not _available():
        return channel
    return grpc.intercept_channel(channel, _TraceInterceptor())


class _TraceInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def _call(self, continuation: Callable[..., Any], details: Any, request: Any, wait: bool) -> Any:
        if "opentelemetry.trace" not in sys.modules:  # nothing in this process traces
            return continuation(details, request)
        from opentelemetry import propagate, trace

        method = str(details.method).lstrip("/")
        service, _, rpc = method.partition("/")
        tracer = trace.get_tracer("modelreg.client")
        attrs = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
        # Not made current and not ended here: the call may be a future (`stub.X.future()`),
        # so the span ends in the call's done callback, never by waiting for it.
        span = tracer.start_span(method, kind=trace.SpanKind.CLIENT, attributes=attrs)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        if carrier:
            details = _ClientDetails(
                details.method,
                details.timeout,
                (*(details.metadata or ()), *carrier.items()),
                details.credentials,
                getattr(details, "wait_for_ready", None),
                getattr(details, "compression", None),
            )
        try:
            outcome = continuation(details, request)
        except BaseException as e:
            span.record_exception(e)
            span.end()
            raise
        if not wait:  # a streamed response: the span covers starting the call
            span.end()
            return outcome

        def done(call: Any) -> None:
            try:
                code = call.code()
                if isinstance(code, grpc.StatusCode):
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code is not grpc.StatusCode.OK:
                        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
            finally:
                span.end()

        outcome.add_done_callback(done)
        return outcome

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return self._call(continuation, client_call_details, request, wait=True)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return self._call(continuation, client_call_details, request_iterator, wait=True)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return self._call(continuation, client_call_details, request, wait=False)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return self._call(continuation, client_call_details, request_iterator, wait=False)
