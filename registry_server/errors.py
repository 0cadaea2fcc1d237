"""Domain errors, and the one place they map to gRPC status codes.

Every error a caller can cause is a named exception here. Its message says what to change.
Anything else that escapes a servicer is a bug and becomes INTERNAL.
"""

from __future__ import annotations

import grpc


class RegistryError(Exception):
    """Base of every error a caller can cause. `code` is the gRPC status it maps to."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, reason: str = "", metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        # google.rpc.ErrorInfo reason and metadata, attached to the status when set.
        self.reason = reason
        self.metadata = metadata or {}


class InvalidArgument(RegistryError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RegistryError):
    code = grpc.StatusCode.NOT_FOUND


class ModelNotFound(NotFound):
    def __init__(self, model: str):
        super().__init__(
            f"model 'models/{model}' does not exist; create it with "
            f"'modelreg models create {model}' or list models with 'modelreg models list'"
        )


class VersionNotFound(NotFound):
    def __init__(self, model: str, version: int | str):
        super().__init__(
            f"version 'models/{model}/versions/{version}' does not exist; "
            f"list versions with 'modelreg list {model}'"
        )


class AlreadyExists(RegistryError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(RegistryError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class StageConflict(FailedPrecondition):
    """An illegal stage move."""


class Aborted(RegistryError):
    code = grpc.StatusCode.ABORTED


class DataLoss(RegistryError):
    code = grpc.StatusCode.DATA_LOSS


class Unavailable(RegistryError):
    code = grpc.StatusCode.UNAVAILABLE
