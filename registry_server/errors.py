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
