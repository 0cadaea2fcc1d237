"""The agent's errors, each with the gRPC status the inference API answers with, and the one
decorator that maps them (and TensorError) onto a servicer's status (`agent_errors`)."""

from __future__ import annotations

import asyncio
import functools
import logging

import grpc

from modelreg.tensors import TensorError

log = logging.getLogger("modelreg.agent.server")


class AgentError(Exception):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ModelNotFollowed(AgentError):
    code = grpc.StatusCode.NOT_FOUND


class VersionNotLoaded(AgentError):
    """A request pinned a version this agent has not loaded (NOT_FOUND, naming what is loaded)."""

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


def agent_errors(fn):
    """Wraps an async servicer method: an AgentError or TensorError aborts with its code and
    message; anything else is INTERNAL (a bug), logged with its traceback."""

    @functools.wraps(fn)
    async def wrapper(self, request, context):
        try:
            return await fn(self, request, context)
        except (AgentError, TensorError) as e:
            await context.abort(e.code, e.message)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as e:  # noqa: BLE001
            log.exception("internal error")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (a bug in the agent): {e!r}")

    return wrapper
