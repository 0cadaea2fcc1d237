"""The one place domain errors become gRPC statuses: a server interceptor.

Every RPC of every service passes through `ErrorInterceptor`. A RegistryError becomes its
status code with its message (and a google.rpc.ErrorInfo when it has a reason); a lost
database or store connection becomes UNAVAILABLE; anything else is a bug: INTERNAL,
logged with its traceback. Servicers and use cases only raise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from modelreg_runtime.grpc_wrap import Handler, WrappingInterceptor, rebuild
from registry_server import errors as e
from registry_server.domain.gates import GateFailed
from registry_server.storage.db import BACKEND_DOWN

log = logging.getLogger("modelreg.errors")

ERROR_DOMAIN = "modelreg.dev"

# Most specific first: the first class in an error's MRO that is listed gives its code.
STATUS: dict[type[e.RegistryError], grpc.StatusCode] = {
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.Aborted: grpc.StatusCode.ABORTED,
    e.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    e.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    e.DataLoss: grpc.StatusCode.DATA_LOSS,
    e.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code(err: e.RegistryError) -> grpc.StatusCode:
    for cls in type(err).__mro__:
        code = STATUS.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN


def to_status(
    code: grpc.StatusCode,
    message: str,
    reason: str = "",
    metadata: dict[str, str] | None = None,
    violations: list[tuple[str, str, str]] | None = None,
):
    """The google.rpc.Status: an ErrorInfo when there is a reason, a PreconditionFailure
    with one (type, subject, description) violation each when there are violations."""
    details = []
    if violations:
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(type=t, subject=s, description=d)
                for t, s, d in violations
            ]
        )
        packed_failure = any_pb2.Any()
        packed_failure.Pack(failure)
        details.append(packed_failure)
    if reason:
        info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
        packed = any_pb2.Any()
        packed.Pack(info)
        details.append(packed)
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(proto)


#: Says what a backend failure was: "database", "artifact store", or "" when unknown. The
#: health monitor's `cause` (it also probes at once, so health flips without waiting a tick).
Diagnose = Callable[[], Awaitable[str]]

#: google.rpc.ErrorInfo reasons of UNAVAILABLE, by what is down; the SDK and CLI tell "cannot
#: connect to the registry" apart from "the registry is up but its database is not" by them.
UNAVAILABLE_REASONS = {"database": "DATABASE_UNAVAILABLE", "artifact store": "ARTIFACT_STORE_UNAVAILABLE"}


async def backend_down(context: grpc.aio.ServicerContext, exc: BaseException, diagnose: Diagnose | None) -> None:
    """Ends the call with UNAVAILABLE for a lost database or store connection, naming which
    one (an ErrorInfo reason from UNAVAILABLE_REASONS) when it can tell. Always raises."""
    log.warning("backend unavailable: %r", exc)
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        what = "database"
        if diagnose is not None:
            await diagnose()  # flips health now
    else:
        what = (await diagnose() if diagnose is not None else "") or ""
    message = (
        f"the registry's {what} is unavailable ({exc!r}); retry shortly"
        if what
        else f"the registry's database or artifact store is unavailable ({exc!r}); retry shortly"
    )
    reason = UNAVAILABLE_REASONS.get(what, "BACKEND_UNAVAILABLE")
    await context.abort_with_status(to_status(grpc.StatusCode.UNAVAILABLE, message, reason))


async def abort(context: grpc.aio.ServicerContext, exc: BaseException, diagnose: Diagnose | None = None) -> None:
    """Ends the call with the status `exc` maps to. Always raises."""
    if isinstance(exc, e.RegistryError):
        code = status_code(exc)
        if isinstance(exc, GateFailed):
            violations = [(r.type.value, r.subject, r.description) for r in exc.results]
            await context.abort_with_status(to_status(code, exc.message, exc.reason, exc.metadata, violations))
        if exc.reason:
            await context.abort_with_status(to_status(code, exc.message, exc.reason, exc.metadata))
        await context.abort(code, exc.message)
    if isinstance(exc, BACKEND_DOWN):
        await backend_down(context, exc, diagnose)
    log.exception("internal error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (a bug in modelreg): {exc!r}")


_PASS = (asyncio.CancelledError, grpc.aio.AbortError)


def _unary(fn: Callable[..., Awaitable[Any]], diagnose: Diagnose | None) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request, context)
        except _PASS:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped, not swallowed
            await abort(context, exc, diagnose)

    return call


def _streaming(fn: Callable[..., AsyncIterator[Any]], diagnose: Diagnose | None) -> Callable[..., AsyncIterator[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in fn(request, context):
                yield item
        except _PASS:
            raise
        except Exception as exc:  # noqa: BLE001
            await abort(context, exc, diagnose)

    return call


class ErrorInterceptor(WrappingInterceptor):
    """Maps what a servicer raises to a status, for every method of our services (our
    servicers are async functions and async generators)."""

    def __init__(self, services: tuple[str, ...], diagnose: Diagnose | None = None):
        super().__init__()
        self.services = services  # full service names whose methods are wrapped
        self.diagnose = diagnose  # names what a lost connection was (and flips health at once)

    def wraps(self, method: str) -> bool:
        return method.split("/")[1] in self.services

    def wrap(self, handler: Handler, method: str) -> Handler:
        d = self.diagnose
        return rebuild(handler, lambda fn: _unary(fn, d), lambda fn: _streaming(fn, d))
