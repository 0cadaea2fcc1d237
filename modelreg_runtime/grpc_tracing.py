"""A gRPC aio server interceptor that runs every RPC in a SERVER span.

Imported only by `modelreg_runtime.tracing.server_interceptors()` once tracing is on (it
imports grpc and OpenTelemetry at import time, which the rest of the package must not).

The span continues the caller's trace from its W3C `traceparent` metadata, is named after
the method (`modelreg.v1.RegistryService/RegisterModelVersion`, the OpenTelemetry RPC
convention), and carries rpc.system, rpc.service, rpc.method, rpc.grpc.status_code and the
caller's principal (`enduser.id`, from `x-modelreg-actor`). grpc.health.v1 and reflection
are not traced. A streamed response makes its span current only while the handler computes
each message (attached and detached within one step), so a stream closed from another
task never detaches a context it did not attach.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from modelreg_runtime.grpc_wrap import Handler, WrappingInterceptor, rebuild

# Server-side codes that mean the server failed (OpenTelemetry's RPC conventions).
SERVER_ERRORS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}
ACTOR_KEY = "x-modelreg-actor"
# With the default propagators a call without `traceparent` carries no context to extract.
W3C_ONLY = os.environ.get("OTEL_PROPAGATORS", "tracecontext,baggage").replace(" ", "") in (
    "tracecontext,baggage",
    "tracecontext",
)


def _incoming(context: grpc.aio.ServicerContext) -> tuple[otel_context.Context | None, str]:
    """The caller's trace context (None when it sent none: the span is a root) and actor."""
    carrier: dict[str, str] = {}
    actor = ""
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            carrier[key] = value
            if key == ACTOR_KEY:
                actor = value[:256]
    if W3C_ONLY and "traceparent" not in carrier:  # nothing to extract: skip the propagators
        return otel_context.Context(), actor
    return propagate.extract(carrier), actor


def _finish(span: trace.Span, context: grpc.aio.ServicerContext, exc: BaseException | None) -> None:
    if not span.is_recording():  # not sampled: nothing to record
        span.end()
        return
    try:
        code = context.code()
    except Exception:  # noqa: BLE001 - older grpc: no code() on the aio context
        code = None
    if not isinstance(code, grpc.StatusCode):
        if isinstance(exc, asyncio.CancelledError):
            code = grpc.StatusCode.CANCELLED
        elif exc is not None and not isinstance(exc, grpc.aio.AbortError):
            code = grpc.StatusCode.UNKNOWN
        else:
            code = grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_ERRORS:
        details = ""
        try:
            details = context.details() or ""
        except Exception:  # noqa: BLE001
            pass
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details}"[:500]))
    span.end()


class TracingInterceptor(WrappingInterceptor):
    def __init__(self, tracer: trace.Tracer):
        super().__init__()
        self.tracer = tracer

    def wraps(self, method: str) -> bool:
        return not method.startswith("/grpc.")  # health and reflection stay untraced

    def wrap(self, handler: Handler, method: str) -> Handler:
        name = method.lstrip("/")
        service, _, rpc = name.partition("/")
        attrs = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
        return rebuild(handler, lambda fn: self._unary(name, attrs, fn), lambda fn: self._stream(name, attrs, fn))

    def _start(self, name: str, attrs: dict[str, str], context: grpc.aio.ServicerContext) -> trace.Span:
        parent, actor = _incoming(context)
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attrs)
        if actor and span.is_recording():
            span.set_attribute("enduser.id", actor)
        return span

    def _unary(self, name: str, attrs: dict[str, str], fn: Callable[..., Any]) -> Any:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            span = self._start(name, attrs, context)
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                result = await fn(request, context)
            except BaseException as exc:
                _finish(span, context, exc)
                raise
            finally:
                otel_context.detach(token)
            _finish(span, context, None)
            return result

        return call

    def _stream(self, name: str, attrs: dict[str, str], fn: Callable[..., Any]) -> Any:
        if not inspect.isasyncgenfunction(fn):  # writes with context.write() and returns
            return self._unary(name, attrs, fn)

        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            span = self._start(name, attrs, context)
            current = trace.set_span_in_context(span)
            responses = fn(request, context)
            failure: BaseException | None = None
            try:
                while True:
                    token = otel_context.attach(current)
                    try:
                        item = await responses.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        otel_context.detach(token)
                    yield item
            except BaseException as exc:
                failure = exc
                raise
            finally:
                _finish(span, context, failure)
                await responses.aclose()

        return call
