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
            f"version 'models/{model}/versions/{version}' does not exist; list versions with 'modelreg list {model}'"
        )


class AlreadyExists(RegistryError):
    """A resource with that name exists already."""


class FailedPrecondition(RegistryError):
    """The request is fine but the current state does not allow it."""


class StageConflict(FailedPrecondition):
    """An illegal stage move."""


class Unauthenticated(RegistryError):
    """No credential, or an unknown, expired or revoked one."""


class PermissionDenied(RegistryError):
    """A known principal without the permission; the message names principal, permission
    and project."""


class Aborted(RegistryError):
    """A concurrent change won (a stale etag); re-read and retry."""


class DataLoss(RegistryError):
    """Stored bytes are missing or corrupted."""


class Unavailable(RegistryError):
    """A backend (database, artifact store) is unreachable; retry shortly."""


# ---------------------------------------------------------------- start-up failures
#
# Not caller errors: they carry no gRPC status. They stop the server before it serves, and
# ONLY the process start-up (`registry_server.app.run_server`) turns them into an exit
# message: one line on stderr, exit status `exit_code`. Their messages say what to check and
# never contain a secret (the S3 secret key, a database password).


class StartupError(Exception):
    """The server cannot start: the database or the artifact store is unreachable or refuses
    it, or the listen address is taken. Exit status 1."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConfigError(StartupError, ValueError):
    """A setting is invalid (an environment variable, a flag, the S3 settings); the message
    names it and says what to set instead. Exit status 2, like a usage error."""

    exit_code = 2
