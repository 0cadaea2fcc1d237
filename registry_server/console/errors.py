"""Domain errors as HTTP statuses. The gRPC code comes from the gRPC edge's table
(`services.errors.status_code`); this module only maps codes to HTTP.

The HTTP codes follow Google's published gRPC-to-HTTP mapping (google/rpc/code.proto), so a
failed gate (FAILED_PRECONDITION) is 400 and a stale etag (ABORTED) 409. The JSON body is
Google's error shape: {"error": {"code": 404, "status": "NOT_FOUND", "message": "..."}}.
Text Postgres cannot store (a NUL) is 400 with the gRPC edge's message, a lost database
503; anything else is a bug: 500, logged with its traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from registry_server import errors as e
from registry_server.domain.gates import GateFailed
from registry_server.services.errors import UNSTORABLE_TEXT, status_code, unstorable_text_message
from registry_server.storage.db import BACKEND_DOWN

log = logging.getLogger("modelreg.console")

# What the app's exception handlers catch: everything (a bug is a 500 in the route's
# format, JSON under /api/, not Starlette's plain-text page).
HANDLED: tuple[type[BaseException], ...] = (e.RegistryError, *UNSTORABLE_TEXT, *BACKEND_DOWN, Exception)

# google/rpc/code.proto's HTTP mapping of the codes RegistryErrors have; any other is 500.
HTTP_CODES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
}


@dataclass(frozen=True)
class HttpError:
    """What a response says about a failure: HTTP code, gRPC status name, message, and
    the failing checks of a gate (type, subject, description)."""

    code: int
    status: str
    message: str
    reason: str = ""
    violations: tuple[tuple[str, str, str], ...] = ()

    def body(self) -> dict:
        error: dict = {"code": self.code, "status": self.status, "message": self.message}
        if self.reason:
            error["reason"] = self.reason
        if self.violations:
            error["violations"] = [{"type": t, "subject": s, "description": d} for t, s, d in self.violations]
        return {"error": error}


def http_error(exc: BaseException) -> HttpError:
    if isinstance(exc, e.RegistryError):
        grpc_code = status_code(exc)
        code, status = HTTP_CODES.get(grpc_code, 500), grpc_code.name
        violations: tuple[tuple[str, str, str], ...] = ()
        if isinstance(exc, GateFailed):
            violations = tuple((r.type.value, r.subject, r.description) for r in exc.results)
        return HttpError(code, status, exc.message, exc.reason, violations)
    if isinstance(exc, UNSTORABLE_TEXT):
        return HttpError(400, "INVALID_ARGUMENT", unstorable_text_message(exc))
    if isinstance(exc, BACKEND_DOWN):
        log.warning("backend unavailable: %r", exc)
        return HttpError(503, "UNAVAILABLE", f"the registry's database or disk is unavailable ({exc!r}); retry shortly")
    log.exception("internal error", exc_info=exc)
    return HttpError(500, "INTERNAL", f"internal error (a bug in modelreg): {exc!r}")


def not_found(path: str) -> HttpError:
    return HttpError(404, "NOT_FOUND", f"nothing is at {path}; the console's pages are /, /models/NAME and /events")
