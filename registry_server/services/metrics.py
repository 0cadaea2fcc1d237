"""go-grpc-prometheus's server metrics for every RPC: one grpc.aio server interceptor.

`MetricsInterceptor` wraps each method's handler (built once per method, like the error
interceptor's) and records on `RegistryMetrics`: started, handled by final status code,
handling seconds (start to the last response), and messages received and sent. It runs
OUTERMOST (before the error interceptor), so the code it records is the one the caller
gets: an aborted call raises grpc.aio.AbortError through it, and the code the abort set is
read from `context.code()`; a call that returns normally is OK unless it set a code; a
cancelled one is CANCELLED; anything else that escapes (only possible for services the
error interceptor does not wrap) is UNKNOWN, as grpc reports it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc

from registry_server.metrics import RegistryMetrics

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in the stubs only

UNARY, CLIENT_STREAM, SERVER_STREAM, BIDI_STREAM = "unary", "client_stream", "server_stream", "bidi_stream"


class _Method:
    """The metric children of one method, resolved once (a labels() lookup per call costs
    more than the increment)."""

    def __init__(self, m: RegistryMetrics, kind: str, method: str):
        service, _, name = method.lstrip("/").partition("/")
        labels = (kind, service, name)
        self.labels = labels
        self.metrics = m
        self.started = m.grpc_started.labels(*labels)
        self.received = m.grpc_received.labels(*labels)
        self.sent = m.grpc_sent.labels(*labels)
        self.handling = m.grpc_handling.labels(*labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def done(self, code: grpc.StatusCode, started: float) -> None:
        self.handling.observe(time.perf_counter() - started)
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self.metrics.grpc_handled.labels(*self.labels, code.name)
        child.inc()


def _final_code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpc versions hand back the integer
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN


async def _counted(requests: AsyncIterator[Any], m: _Method) -> AsyncIterator[Any]:
    async for r in requests:
        m.received.inc()
        yield r


def _unary_response(fn: Callable[..., Awaitable[Any]], m: _Method, streamed_in: bool) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        m.started.inc()
        started = time.perf_counter()
        if streamed_in:
            request = _counted(request, m)
        else:
            m.received.inc()
        try:
            response = await fn(request, context)
        except BaseException as e:
            m.done(_final_code(context, e), started)
            raise
        m.sent.inc()
        m.done(_final_code(context, None), started)
        return response

    return call


def _stream_response(fn: Callable[..., AsyncIterator[Any]], m: _Method, streamed_in: bool) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        m.started.inc()
        started = time.perf_counter()
        if streamed_in:
            request = _counted(request, m)
        else:
            m.received.inc()
        try:
            async for item in fn(request, context):
                m.sent.inc()
                yield item
        except BaseException as e:
            m.done(_final_code(context, e), started)
            raise
        m.done(_final_code(context, None), started)

    return call


def _stream_by_writes(fn: Callable[..., Awaitable[Any]], m: _Method, streamed_in: bool) -> Callable[..., Any]:
    """A streaming handler that writes with `context.write` (grpc_health's Watch): timed and
    counted, its messages sent are not (they bypass the interceptor)."""
    return _unary_response(fn, m, streamed_in)


def _wrap(handler: Handler, metrics: RegistryMetrics, method: str) -> Handler:
    kw: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        m = _Method(metrics, UNARY, method)
        return grpc.unary_unary_rpc_method_handler(_unary_response(handler.unary_unary, m, False), **kw)
    if handler.stream_unary:
        m = _Method(metrics, CLIENT_STREAM, method)
        return grpc.stream_unary_rpc_method_handler(_unary_response(handler.stream_unary, m, True), **kw)
    streaming_in = handler.stream_stream is not None
    fn = cast(Any, handler.stream_stream if streaming_in else handler.unary_stream)
    m = _Method(metrics, BIDI_STREAM if streaming_in else SERVER_STREAM, method)
    wrapped = (
        _stream_response(fn, m, streaming_in)
        if inspect.isasyncgenfunction(fn)
        else _stream_by_writes(fn, m, streaming_in)
    )
    if streaming_in:
        return grpc.stream_stream_rpc_method_handler(wrapped, **kw)
    return grpc.unary_stream_rpc_method_handler(wrapped, **kw)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Records go-grpc-prometheus's server metrics for every method of every service."""

    def __init__(self, metrics: RegistryMetrics):
        self.metrics = metrics
        # method -> (the handler the chain returned, its wrapper)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        method = details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        if handler is None:
            return None
        wrapped = _wrap(handler, self.metrics, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
