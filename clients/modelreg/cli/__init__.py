"""`modelreg`: the command line. A thin layer over `modelreg.Client`.

Every command takes `-o json`. Errors print the server's message (no traceback) and exit 1;
usage errors exit 2.

`modelreg server` and `modelreg agent` belong to the registry and agent packages
(`registry_server.cli`, `serving_agent.cli`), which are found here by module name and never
imported by the SDK itself: `pip install modelreg` installs their code but not their
dependencies, and each command checks for its extra when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from modelreg import errors

# Modules that add subcommands, in help order: each has `register(subparsers, common)`.
COMMAND_MODULES = (
    "registry_server.cli",  # server (needs modelreg[server])
    "modelreg.cli.registry_cmds",
    "modelreg.cli.watch_cmd",
    "serving_agent.cli",  # agent (needs modelreg[agent])
    "modelreg.cli.agent_cmds",
    "modelreg.cli.deploy_cmds",
    "modelreg.cli.alias_cmds",
    "modelreg.cli.artifact_cmds",
)


class UsageError(Exception):
    """Bad command-line input; exits 2."""


def common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=argparse.SUPPRESS,
        help="output format (default: table)",
    )
    common.add_argument(
        "--address",
        default=argparse.SUPPRESS,
        help="registry address (default: $MODELREG_ADDRESS or 127.0.0.1:50051)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="modelreg",
        description="modelreg: a model registry that pushes stage changes to serving agents.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):  # that package is not installed
                continue
            raise
        module.register(sub, common)
    return parser


def execute(args: argparse.Namespace) -> int:
    """Runs a parsed command (`args.func`) with the common options' defaults filled in and
    turns its errors into exit codes: usage 2, a failed call 1, Ctrl-C 130."""
    args.output = getattr(args, "output", "table")
    args.address = getattr(args, "address", None) or os.environ.get("MODELREG_ADDRESS") or "127.0.0.1:50051"
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"modelreg {args.command}: {e}", file=sys.stderr)
        return 2
    except errors.ModelregError as e:
        print(f"Error: {e.message} ({e.code.name})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def main(argv: list[str] | None = None) -> int:
    return execute(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
