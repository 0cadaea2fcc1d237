"""`modelreg`: the command line. A thin layer over `modelreg.Client`.

Every command takes `-o json`, `--address`, `--token-file` and `--ca-cert` (with
MODELREG_TOKEN / MODELREG_TOKEN_FILE, MODELREG_CA_CERT, MODELREG_CLIENT_CERT and
MODELREG_CLIENT_KEY from the environment; `connect(args)` builds the client from them).
Errors print the server's message (no traceback) and exit 1; usage errors exit 2.

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
from typing import TYPE_CHECKING, Any

from modelreg import errors
from modelreg.credentials import ConfigError

if TYPE_CHECKING:
    from modelreg.client import Client

# Modules that add subcommands, in help order: each has `register(subparsers, common)`.
COMMAND_MODULES = (
    "registry_server.cli",  # server (needs modelreg[server])
    "modelreg.cli.registry_cmds",
    "modelreg.cli.gate_cmds",
    "modelreg.cli.watch_cmd",
    "serving_agent.cli",  # agent (needs modelreg[agent])
    "modelreg.cli.agent_cmds",
    "modelreg.cli.deploy_cmds",
    "modelreg.cli.alias_cmds",
    "modelreg.cli.artifact_cmds",
    "modelreg.cli.access_cmds",
    "modelreg.cli.card_cmds",
    "modelreg.cli.webhook_cmds",
)

#: Printed under an UNAUTHENTICATED error.
TOKEN_HINT = "hint: set MODELREG_TOKEN or --token-file to a live token (an admin makes one: modelreg tokens create)"


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
    common.add_argument(
        "--token-file",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="file holding the bearer token, re-read when it changes (default: $MODELREG_TOKEN_FILE, "
        "else the token in $MODELREG_TOKEN)",
    )
    common.add_argument(
        "--ca-cert",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="CA certificate to verify the registry with; implies TLS (default: $MODELREG_CA_CERT)",
    )
    return common


def connect(args: argparse.Namespace, **kw: Any) -> Client:
    """A `modelreg.Client` for a parsed command: its address, and its --token-file and
    --ca-cert over the environment's MODELREG_TOKEN*, MODELREG_CA_CERT, MODELREG_CLIENT_*."""
    from modelreg.client import Client
    from modelreg.credentials import Credentials

    creds = Credentials.from_env(token_file=getattr(args, "token_file", None), ca_cert=getattr(args, "ca_cert", None))
    return Client(args.address, credentials=creds, **kw)


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
    args.token_file = getattr(args, "token_file", None)
    args.ca_cert = getattr(args, "ca_cert", None)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"modelreg {args.command}: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:  # an unreadable --token-file / --ca-cert: fix the command line
        print(f"modelreg {args.command}: {e.message}", file=sys.stderr)
        return 2
    except errors.Unauthenticated as e:
        print(f"Error: {e.message} ({e.code.name})\n{TOKEN_HINT}", file=sys.stderr)
        return 1
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
