"""Client-side errors: the server's status as exceptions with its message."""

from __future__ import annotations

from typing import NamedTuple, cast

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class Violation(NamedTuple):
    """One google.rpc.PreconditionFailure violation: for a refused gate, one failing check
    (`type` such as `max-drop`, `subject` the metric or '', a sentence for people)."""

    type: str
    subject: str
    description: str


class ModelregError(Exception):
    """A failed call. `code` is the gRPC status code, `message` the server's message,
    `reason` the google.rpc.ErrorInfo reason when the server attached one, and `violations`
    the google.rpc.PreconditionFailure violations (a gate's failing checks), in order."""

    def __init__(
        self, code: grpc.StatusCode, message: str, reason: str = "", violations: list[Violation] | None = None
    ):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.violations: list[Violation] = list(violations or [])


class NotFound(ModelregError):
    pass


class AlreadyExists(ModelregError):
    pass


class InvalidArgument(ModelregError):
    pass


class FailedPrecondition(ModelregError):
    pass


class DataLoss(ModelregError):
    pass


class Unavailable(ModelregError):
    pass


class Aborted(ModelregError):
    pass


class Unauthenticated(ModelregError):
    """No credential, or an unknown, expired or revoked one."""


class PermissionDenied(ModelregError):
    """The principal lacks the permission; the message names it and the project."""


class IntegrityError(ModelregError):
    """Downloaded bytes did not match the sha256 the registry declared."""

    def __init__(self, message: str):
        super().__init__(grpc.StatusCode.DATA_LOSS, message)


_BY_CODE = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.ABORTED: Aborted,
}


def _status_details(err: grpc.RpcError) -> list:
    """The google.rpc.Status details attached to a failed call (packed Any messages)."""
    try:
        # Every RpcError grpc raises (sync or aio) is also a Call; the stubs only say RpcError.
        status = rpc_status.from_call(cast(grpc.Call, err))
    except Exception:  # noqa: BLE001 - a status without details
        return []
    return list(status.details) if status is not None else []


def error_reason(err: grpc.RpcError) -> str:
    """The google.rpc.ErrorInfo reason attached to a status, or ''."""
    for detail in _status_details(err):
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def error_violations(err: grpc.RpcError) -> list[Violation]:
    """The google.rpc.PreconditionFailure violations attached to a status, in order."""
    found = []
    for detail in _status_details(err):
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            found += [Violation(v.type, v.subject, v.description) for v in failure.violations]
    return found


def _connect_hint(details: str) -> str:
    """What to change for a connection that failed below gRPC (TCP or TLS)."""
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (
            "the registry's certificate is not signed by the CA given: set --ca-cert or MODELREG_CA_CERT to the CA "
            "that signed it"
        )
    if "WRONG_VERSION_NUMBER" in details:
        return "the registry does not speak TLS there: drop --ca-cert / MODELREG_CA_CERT, or start it with --tls-cert"
    if "handshake" in details.lower():
        return "the TLS handshake failed: check --ca-cert / MODELREG_CA_CERT and MODELREG_CLIENT_CERT / _KEY"
    if "socket closed" in details.lower():
        return (
            "is it running? set MODELREG_ADDRESS or --address; if it uses TLS, set --ca-cert or MODELREG_CA_CERT, "
            "and if it requires a client certificate, MODELREG_CLIENT_CERT and MODELREG_CLIENT_KEY"
        )
    return "is it running? set MODELREG_ADDRESS or --address"


#: google.rpc.ErrorInfo reasons of an UNAVAILABLE the registry itself sent: it is up, but
#: what it depends on is not.
BACKEND_REASONS = {
    "DATABASE_UNAVAILABLE": "database",
    "ARTIFACT_STORE_UNAVAILABLE": "artifact store",
    "BACKEND_UNAVAILABLE": "database or artifact store",
}


def _unhealthy_everywhere(lowered: str) -> bool:
    """gRPC's own message when every address of a round_robin channel reports NOT_SERVING."""
    return "backend unhealthy" in lowered or "health check" in lowered


def from_rpc_error(err: grpc.RpcError, address: str = "") -> ModelregError:
    """The error class for the status code. UNAVAILABLE says which of two failures it was:
    "cannot connect to the registry at ADDR" (no answer: wrong address, not running, TLS) or
    "the registry at ADDR is up but its database is unavailable" (the server answered, with a
    DATABASE_UNAVAILABLE / ARTIFACT_STORE_UNAVAILABLE reason). Every other status keeps the
    server's message as it is. `address` is the target the caller dialed, for the message."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    reason = error_reason(err)
    lowered = (details or "").lower()
    where = f"the registry at {address}" if address else "the registry"
    if code == grpc.StatusCode.UNAVAILABLE and reason in BACKEND_REASONS:
        details = f"{where} is up but its {BACKEND_REASONS[reason]} is unavailable: {details}"
    elif code == grpc.StatusCode.UNAVAILABLE and not reason and _unhealthy_everywhere(lowered):
        details = (
            f"every registry at {address or 'the address given'} reports NOT_SERVING (its database or artifact "
            f"store is unavailable) ({details}); retry shortly"
        )
    elif (
        code == grpc.StatusCode.UNAVAILABLE
        and not reason
        and (not details or "failed to connect" in lowered or "connection refused" in lowered)
    ):
        details = f"cannot connect to {where} ({details}); {_connect_hint(details or '')}"
    cls = _BY_CODE.get(code, ModelregError)
    return cls(code, details or code.name, reason, error_violations(err))
