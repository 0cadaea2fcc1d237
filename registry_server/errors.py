"""Domain errors: every error a caller can cause is a named exception here, and its message
says what to change. They carry no transport types: `services.errors` maps them to gRPC
status codes in one place (and a later HTTP front end to HTTP codes). Anything else that
escapes a use case is a bug and becomes INTERNAL.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every error a caller can cause."""

    def __init__(self, message: str, *, reason: str = "", metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        # google.rpc.ErrorInfo reason and metadata, attached to the status when set.
        self.reason = reason
        self.metadata = metadata or {}


class InvalidArgument(RegistryError):
    """The request itself is wrong: a bad name, field or value."""


class NotFound(RegistryError):
    """The resource the request names does not exist."""


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
    """A resource with that name exists already."""


class FailedPrecondition(RegistryError):
    """The request is fine but the current state does not allow it."""


class StageConflict(FailedPrecondition):
    """An illegal stage move."""


class Aborted(RegistryError):
    """A concurrent change won (a stale etag); re-read and retry."""


class DataLoss(RegistryError):
    """Stored bytes are missing or corrupted."""


class Unavailable(RegistryError):
    """A backend (database, artifact store) is unreachable; retry shortly."""
