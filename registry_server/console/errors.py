"""The one place domain errors become HTTP statuses (the gRPC edge has services.errors).

The codes follow Google's published gRPC-to-HTTP mapping (google/rpc/code.proto), so a
failed gate (FAILED_PRECONDITION) is 400 and a stale etag (ABORTED) 409. The JSON body is
Google's error shape: {"error": {"code": 404, "status": "NOT_FOUND", "message": "..."}}.
A lost database is 503; anything else is a bug: 500, logged with its traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from registry_server import errors as e
from registry_server.domain.gates import GateFailed
from registry_server.storage.db import BACKEND_DOWN

log = logging.getLogger("modelreg.console")

# What the app's exception handlers catch: caller errors and a lost backend.
HANDLED: tuple[type[BaseException], ...] = (e.RegistryError, *BACKEND_DOWN)

# Most specific first: the first class in an error's MRO that is listed gives its status.
STATUS: dict[type[e.RegistryError], tuple[int, str]] = {
    e.InvalidArgument: (400, "INVALID_ARGUMENT"),
    e.NotFound: (404, "NOT_FOUND"),
    e.AlreadyExists: (409, "ALREADY_EXISTS"),
    e.FailedPrecondition: (400, "FAILED_PRECONDITION"),
    e.Aborted: (409, "ABORTED"),
    e.Unauthenticated: (401, "UNAUTHENTICATED"),
    e.PermissionDenied: (403, "PERMISSION_DENIED"),
    e.DataLoss: (500, "DATA_LOSS"),
    e.Unavailable: (503, "UNAVAILABLE"),
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
        code, status = 500, "UNKNOWN"
        for cls in type(exc).__mro__:
            if cls in STATUS:
                code, status = STATUS[cls]
                break
        violations: tuple[tuple[str, str, str], ...] = ()
        if isinstance(exc, GateFailed):
            violations = tuple((r.type.value, r.subject, r.description) for r in exc.results)
        return HttpError(code, status, exc.message, exc.reason, violations)
    if isinstance(exc, BACKEND_DOWN):
        log.warning("backend unavailable: %r", exc)
        return HttpError(503, "UNAVAILABLE", f"the registry's database or disk is unavailable ({exc!r}); retry shortly")
    log.exception("internal error", exc_info=exc)
    return HttpError(500, "INTERNAL", f"internal error (a bug in modelreg): {exc!r}")


def not_found(path: str) -> HttpError:
    return HttpError(404, "NOT_FOUND", f"nothing is at {path}; the console's pages are /, /models/NAME and /events")
