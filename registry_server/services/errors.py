"""The one place domain errors become gRPC statuses: a server interceptor.

Every RPC of every service passes through `ErrorInterceptor`. A RegistryError becomes its
status code with its message (and a google.rpc.ErrorInfo when it has a reason); a lost
database or store connection becomes UNAVAILABLE; anything else is a bug: INTERNAL,
logged with its traceback. Servicers and use cases only raise.

Request bytes that are not the method's message (corrupt wire format, a string field that
is not UTF-8, nesting past protobuf's limit) never reach a servicer: they are
INVALID_ARGUMENT here, naming the message type (grpc itself would answer UNKNOWN, or
INTERNAL mid-stream); a single such request is refused before authentication, as nothing
in it can be read. Messages are bounded (`bounded`) so they reach the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from google.protobuf import any_pb2, descriptor_pool
from google.protobuf.message import DecodeError
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


# A status message travels in a trailer, and gRPC clients drop a call whose trailers pass
# 16 KiB (RESOURCE_EXHAUSTED "metadata size exceeds hard limit"), losing the message. Messages
# quote what the caller sent, so a longer one keeps its head and its tail (which says what
# to change) and says how much of the middle it cut.
MAX_MESSAGE_CHARS = 2000


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    if len(message) <= limit:
        return message
    keep = (limit - 40) // 2
    return f"{message[:keep]} …[{len(message) - 2 * keep} characters cut]… {message[-keep:]}"


# Postgres text holds no NUL character (and the statement, in its transaction, wrote
# nothing). Strings reach SQL from dozens of fields; the one place to say so is at each edge
# (here and the console's errors), with this message.
UNSTORABLE_TEXT: tuple[type[BaseException], ...] = (
    asyncpg.CharacterNotInRepertoireError,
    asyncpg.UntranslatableCharacterError,
)


def unstorable_text_message(exc: BaseException) -> str:
    """What a request with a character Postgres cannot store (an UNSTORABLE_TEXT error) is told."""
    return (
        "a text field of the request contains the NUL character (\\x00) or another character the "
        f"registry cannot store ({bounded(str(exc), 200)}); remove it and send the request again"
    )


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
    await context.abort_with_status(to_status(grpc.StatusCode.UNAVAILABLE, bounded(message), reason))


async def abort(context: grpc.aio.ServicerContext, exc: BaseException, diagnose: Diagnose | None = None) -> None:
    """Ends the call with the status `exc` maps to. Always raises."""
    if isinstance(exc, e.RegistryError):
        code = status_code(exc)
        message = bounded(exc.message)
        metadata = {k: bounded(v, 200) for k, v in exc.metadata.items()}
        if isinstance(exc, GateFailed):
            violations = [(r.type.value, bounded(r.subject, 200), bounded(r.description, 500)) for r in exc.results]
            await context.abort_with_status(to_status(code, message, exc.reason, metadata, violations))
        if exc.reason:
            await context.abort_with_status(to_status(code, message, exc.reason, metadata))
        await context.abort(code, message)
    if isinstance(exc, UNSTORABLE_TEXT):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, unstorable_text_message(exc))
    if isinstance(exc, BACKEND_DOWN):
        await backend_down(context, exc, diagnose)
    log.exception("internal error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, bounded(f"internal error (a bug in modelreg): {exc!r}"))


_PASS = (asyncio.CancelledError, grpc.aio.AbortError)


class UndecodableRequest(e.InvalidArgument):
    """The request's bytes are not a message of the method's request type."""

    def __init__(self, type_name: str, error: DecodeError):
        detail = str(error).rsplit(": ", 1)[-1] or "wire format was corrupt"
        super().__init__(
            f"the request is not a valid {type_name} ({detail}); send a serialized {type_name} "
            "with UTF-8 text in every string field and nesting within protobuf's limit (100 levels)"
        )


def _deserializer(parse: Callable[[bytes], Any] | None, type_name: str, streamed: bool) -> Callable[[bytes], Any]:
    """`parse`, with bytes it cannot decode turned into an UndecodableRequest: raised inside
    a request stream (the servicer's loop raises it on, and `_unary` maps it), returned for
    a single request (grpc would answer UNKNOWN for a raise; the behaviour aborts instead)."""

    def decode(data: bytes) -> Any:
        try:
            return parse(data) if parse is not None else data
        except DecodeError as exc:
            if streamed:
                raise UndecodableRequest(type_name, exc) from None
            return UndecodableRequest(type_name, exc)

    return decode


def _unary(fn: Callable[..., Awaitable[Any]], diagnose: Diagnose | None) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if isinstance(request, UndecodableRequest):
                raise request
            return await fn(request, context)
        except _PASS:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped, not swallowed
            await abort(context, exc, diagnose)

    return call


def _streaming(fn: Callable[..., AsyncIterator[Any]], diagnose: Diagnose | None) -> Callable[..., AsyncIterator[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            if isinstance(request, UndecodableRequest):
                raise request
            async for item in fn(request, context):
                yield item
        except _PASS:
            raise
        except Exception as exc:  # noqa: BLE001
            await abort(context, exc, diagnose)

    return call


def _request_type(method: str) -> str:
    """The request message's full name, from the method's descriptor."""
    service, name = method.strip("/").split("/", 1)
    try:
        return descriptor_pool.Default().FindServiceByName(service).methods_by_name[name].input_type.full_name
    except KeyError:
        return "request message"


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
        decode = _deserializer(handler.request_deserializer, _request_type(method), bool(handler.request_streaming))
        return rebuild(handler, lambda fn: _unary(fn, d), lambda fn: _streaming(fn, d), decode)
