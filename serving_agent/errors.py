"""The agent's errors, each with the gRPC status the inference API answers with."""

from __future__ import annotations

import grpc


class AgentError(Exception):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ModelNotFollowed(AgentError):
    code = grpc.StatusCode.NOT_FOUND


class NoVersionLoaded(AgentError):
    code = grpc.StatusCode.UNAVAILABLE


class BadInput(AgentError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class WrongModelKind(AgentError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class IntegrityError(AgentError):
    """Bytes whose sha256 does not match the registered digest: refused, never loaded."""

    code = grpc.StatusCode.DATA_LOSS


class FetchError(AgentError):
    """The artifact could not be downloaded (registry unreachable, DATA_LOSS, ...)."""

    code = grpc.StatusCode.UNAVAILABLE


class StartupError(Exception):
    """The agent cannot start (its inference or metrics address cannot be bound). Not a
    caller's error: only the command line turns it into one line on stderr and `exit_code`."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class AgentConfigError(StartupError):
    """A setting the agent cannot use: a TLS certificate without its key, a token, CA or
    certificate file that cannot be read. Exit 2, as for any other bad setting."""

    exit_code = 2
