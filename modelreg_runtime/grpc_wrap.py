"""The base of the server interceptors that wrap each method's handler (error mapping,
metrics, tracing): the wrapper of a method is built once and reused for as long as the
chain keeps returning the same handler. Imports grpc (both processes have it); nothing of
the project."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in grpc's stubs only
Behaviour: TypeAlias = Callable[..., Any]


def rebuild(
    handler: Handler,
    unary: Callable[[Behaviour], Behaviour],
    streaming: Callable[[Behaviour], Behaviour],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Handler:
    """The same method with its behaviour wrapped: `unary(fn)` for a single response
    (unary and client-streaming calls), `streaming(fn)` for a response stream, and its
    request deserializer replaced when one is given. (grpc's stubs type behaviours as sync
    functions; ours are coroutines and async generators, hence the casts.)"""
    kw: dict[str, Any] = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(cast(Any, handler.unary_stream)), **kw)
    return grpc.stream_stream_rpc_method_handler(streaming(cast(Any, handler.stream_stream)), **kw)


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses say which methods they wrap (`wraps`) and how (`wrap`)."""

    def __init__(self) -> None:
        # method -> (the handler the chain returned, its wrapper)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def wraps(self, method: str) -> bool:
        """Whether `method` (`/package.Service/Method`) gets a wrapper; every one by default."""
        return True

    def wrap(self, handler: Handler, method: str) -> Handler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or not self.wraps(method):
            return handler
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
