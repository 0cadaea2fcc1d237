"""The one place domain errors become gRPC statuses.

`grpc_errors` wraps servicer methods (unary and streaming). A RegistryError becomes its
status code with its message (and a google.rpc.ErrorInfo when it has a reason); a lost
database or store connection becomes UNAVAILABLE; anything else is a bug: INTERNAL,
logged with its traceback.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from registry_server.errors import RegistryError

log = logging.getLogger(__name__)

ERROR_DOMAIN = "modelreg.dev"

_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    # ConnectionError, and FileNotFoundError when the embedded Postgres's socket is gone.
    OSError,
    TimeoutError,
)


def to_status(code: grpc.StatusCode, message: str, reason: str = "", metadata: dict[str, str] | None = None):
    details = []
    if reason:
        info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
        packed = any_pb2.Any()
        packed.Pack(info)
        details.append(packed)
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(proto)


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, RegistryError):
        if exc.reason:
            await context.abort_with_status(to_status(exc.code, exc.message, exc.reason, exc.metadata))
        await context.abort(exc.code, exc.message)
    if isinstance(exc, _UNAVAILABLE):
        log.warning("backend unavailable: %r", exc)
        what = "database" if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError) else "database or disk"
        await context.abort(
            grpc.StatusCode.UNAVAILABLE, f"the registry's {what} is unavailable ({exc!r}); retry shortly"
        )
    log.exception("internal error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (a bug in modelreg): {exc!r}")


def grpc_errors(fn):
    """Maps exceptions of a servicer method to statuses; works for unary and streaming."""
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream_wrapper(self, request, context):
            try:
                async for item in fn(self, request, context):
                    yield item
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:  # noqa: BLE001 - mapped, not swallowed
                await _abort(context, exc)

        return stream_wrapper

    @functools.wraps(fn)
    async def unary_wrapper(self, request, context):
        try:
            return await fn(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc)

    return unary_wrapper


def actor_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's name from `x-modelreg-actor` metadata (until authentication exists)."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-modelreg-actor" and value:
            return str(value)[:256]
    return "anonymous"
