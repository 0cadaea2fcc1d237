"""Authentication at the gRPC edge: one interceptor turns each call's credential into the
`Caller` every use case receives (`caller_of(context)`); the use cases authorize.

The interceptor wraps every method of our services (health and reflection stay open). It
reads `authorization: Bearer <token>` metadata, else the verified client certificate's CN
and SANs (mTLS), and the `x-modelreg-actor` text. A streaming call registers with `Access`
so that a token revoked or expired while the stream is open ends it with UNAUTHENTICATED:
`Access` cancels the task only while it awaits the servicer, and the wrapper turns that
cancellation into the status (a cancellation it did not ask for passes through).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from modelreg_runtime.grpc_wrap import Handler, WrappingInterceptor, rebuild
from registry_server.domain.access import ANONYMOUS, Caller, anonymous
from registry_server.errors import Unauthenticated
from registry_server.usecases.access import Access

ACTOR_HEADER = "x-modelreg-actor"
_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("modelreg_caller", default=None)


def caller_of(context: grpc.aio.ServicerContext) -> Caller:
    """The authenticated caller of the current call. Fails closed: a method the
    interceptor did not wrap has no caller, and that is a bug, never an anonymous pass."""
    caller = _CALLER.get()
    if caller is None:
        raise RuntimeError("no caller: the method was not wrapped by AuthInterceptor")
    return caller


def _metadata(context: grpc.aio.ServicerContext) -> tuple[str | None, str]:
    """(the `authorization` value or None, the `x-modelreg-actor` text or 'anonymous')."""
    authorization, actor = None, ANONYMOUS
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            authorization = str(value)
        elif key == ACTOR_HEADER and value:
            actor = str(value)[:256]
    return authorization, actor


def _certificate_names(context: grpc.aio.ServicerContext) -> list[str]:
    """The verified client certificate's CN and SANs (empty without mTLS)."""
    peer = context.auth_context()
    if peer.get("transport_security_type") != [b"ssl"]:
        return []
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        names += [v.decode(errors="replace") for v in peer.get(key, ())]
    return names


class AuthInterceptor(WrappingInterceptor):
    def __init__(self, access: Access, services: tuple[str, ...]):
        super().__init__()
        self.access = access
        self.services = services

    def wraps(self, method: str) -> bool:
        return method.split("/")[1] in self.services

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> Caller:
        authorization, actor = _metadata(context)
        if not self.access.enabled:
            return anonymous(actor)
        names = [] if authorization else _certificate_names(context)
        return await self.access.authenticate(authorization, names, actor)

    def _unary(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            _CALLER.set(await self._authenticate(context))
            return await fn(request, context)

        return call

    def _streaming(self, fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        access = self.access

        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            caller = await self._authenticate(context)
            _CALLER.set(caller)
            stream = access.open_stream(caller)
            items = aiter(fn(request, context))
            try:
                while True:
                    if stream.ended is not None:
                        raise Unauthenticated(stream.ended)
                    stream.inside = True
                    try:
                        item = await anext(items)
                    except StopAsyncIteration:
                        return
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if stream.ended is not None and task is not None and task.cancelling():
                            task.uncancel()
                            raise Unauthenticated(stream.ended) from None
                        raise
                    finally:
                        stream.inside = False
                    yield item
            finally:
                access.close_stream(stream)

        return call

    def wrap(self, handler: Handler, method: str) -> Handler:
        return rebuild(handler, self._unary, self._streaming)
