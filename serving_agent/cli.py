"""`modelreg agent` and `python -m serving_agent`: run a serving agent beside an application.

Importing this module is cheap and needs no extra: the `modelreg` command line adds its
parser to every invocation. The agent itself (numpy, onnxruntime) is imported only when the
command runs, after `modelreg_runtime.extras.require` has checked the agent extra is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

from modelreg.cli import UsageError, common_parser, execute
from modelreg_runtime.extras import MissingExtra, require

COMMAND = "agent"
DEFAULT_METRICS = "127.0.0.1:9464"
MODEL_ID = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")  # the registry's rule (domain/aliases.py)
NOT_ALIASES = ("none", "staging", "archived", "latest")
DESCRIPTION = (
    "Run a serving agent beside an application: it follows each model's production version "
    "(or, with --model NAME@ALIAS, the version a named alias points at) through WatchEvents, "
    "downloads, verifies, loads and warms it up, swaps it in with zero failed requests, and serves "
    "Predict/Detect on localhost or a Unix socket."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", help="registry address (default: --address, $MODELREG_ADDRESS or 127.0.0.1:50051)")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME[@ALIAS]",
        help="a model to serve (repeat for several): its production version, or with @ALIAS "
        "(detector@champion) the version that alias points at",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--listen", default=None, help="inference API address (default: $MODELREG_AGENT_LISTEN or 127.0.0.1:50052)"
    )
    where.add_argument("--uds", metavar="PATH", help="serve the inference API on a Unix socket instead")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="artifact cache and state (default: $MODELREG_AGENT_CACHE_DIR or ./.modelreg-agent)",
    )
    p.add_argument(
        "--cache-max-bytes",
        type=int,
        default=None,
        help="cache bound; unreferenced blobs are evicted least recently used first (default: 10 GiB)",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="ADDR",
        default=None,
        help="serve Prometheus metrics on http://ADDR/metrics; 'off' disables "
        f"(default: $MODELREG_METRICS_ADDRESS or {DEFAULT_METRICS})",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="the same as --metrics-listen METRICS_HOST:PORT (0 picks a port)",
    )
    p.add_argument("--metrics-host", default="127.0.0.1", help="the host for --metrics-port (default: 127.0.0.1)")
    p.add_argument("--agent-id", default=None, help="the id reported to the registry (default: HOSTNAME-PID)")
    p.add_argument("--node", default=None, help="the node name reported to the registry (default: the host name)")
    p.add_argument(
        "--providers",
        nargs="+",
        default=None,
        metavar="PROVIDER",
        help="onnxruntime execution providers in order (default: CUDAExecutionProvider when present, "
        "else CPUExecutionProvider)",
    )
    p.add_argument("--intra-op-threads", type=int, default=0, help="onnxruntime intra-op threads (default: its own)")
    p.add_argument(
        "--keep-warm",
        type=int,
        default=None,
        metavar="N",
        help="previous versions per model kept loaded after a swap, so a rollback is instant "
        "(default: $MODELREG_AGENT_KEEP_WARM or 1; 0 turns it off)",
    )
    p.add_argument(
        "--report-interval",
        type=float,
        default=2.0,
        help="seconds between status reports to the registry (default: 2; also on every change)",
    )
    p.add_argument(
        "--retry-initial",
        type=float,
        default=1.0,
        help="first retry delay after a failed load, doubling up to --retry-max (default: 1)",
    )
    p.add_argument("--retry-max", type=float, default=30.0, help="longest retry delay in seconds (default: 30)")
    security = p.add_argument_group("identity and TLS")
    # The `modelreg` command line may give every command --token-file and --ca-cert: then the
    # agent reads the same ones (the same dest), so they are added here only when missing.
    _add_once(
        security,
        p,
        "--token-file",
        metavar="FILE",
        help="bearer token for the registry, re-read when the file changes, so a rotated token needs "
        "no restart (default: $MODELREG_TOKEN_FILE, else the token in $MODELREG_TOKEN)",
    )
    _add_once(
        security,
        p,
        "--ca-cert",
        metavar="FILE",
        help="CA that signed the registry's certificate; implies TLS to the registry (default: "
        "$MODELREG_CA_CERT; $MODELREG_CLIENT_CERT and $MODELREG_CLIENT_KEY add a client certificate)",
    )
    security.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve the inference API over TLS with this certificate chain (PEM, with --tls-key; default: "
        "$MODELREG_TLS_CERT)",
    )
    security.add_argument(
        "--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM; default: $MODELREG_TLS_KEY)"
    )
    security.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="require every inference client to present a certificate signed by this CA (mTLS; default: "
        "$MODELREG_TLS_CLIENT_CA)",
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    p.add_argument(
        "--log-format", choices=("text", "json"), default=None, help="log lines (default: $MODELREG_LOG_FORMAT or text)"
    )
    p.set_defaults(func=run_agent, command=COMMAND)


def _add_once(group: Any, parser: argparse.ArgumentParser, flag: str, **kw: Any) -> None:
    if flag not in parser._option_string_actions:
        group.add_argument(flag, default=None, **kw)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Adds `agent` to the `modelreg` command line."""
    p = sub.add_parser(
        COMMAND,
        parents=[common],
        help="run a serving agent that follows production and serves it",
        description=DESCRIPTION,
    )
    add_arguments(p)


def run_agent(args: argparse.Namespace) -> int:
    try:
        require("agent", f"modelreg {COMMAND}")
    except MissingExtra as e:
        print(e, file=sys.stderr)
        return 2
    from modelreg_runtime import logs, tracing
    from serving_agent.agent import AgentConfig, keep_warm_from_env
    from serving_agent.errors import StartupError
    from serving_agent.security import InferenceTLS, registry_credentials
    from serving_agent.server import listen_address, serve

    try:
        logs.configure(args.log_level, args.log_format)
    except ValueError as e:
        raise UsageError(str(e)) from None
    tracing.setup(tracing.AGENT)  # only when OTEL_* asks for it
    if args.intra_op_threads < 0:
        raise UsageError("--intra-op-threads must not be negative; 0 means onnxruntime's default")
    if args.report_interval <= 0:
        raise UsageError("--report-interval must be positive")
    models = followed_models(args.model)
    listen = listen_address(args.listen or os.environ.get("MODELREG_AGENT_LISTEN") or "127.0.0.1:50052", args.uds)
    if args.uds:
        Path(args.uds).parent.mkdir(parents=True, exist_ok=True)
        Path(args.uds).unlink(missing_ok=True)
    if args.keep_warm is not None and args.keep_warm < 0:
        raise UsageError("--keep-warm must not be negative; 0 turns warm standby off")
    try:
        keep_warm = args.keep_warm if args.keep_warm is not None else keep_warm_from_env()
    except ValueError as e:
        raise UsageError(str(e)) from None
    env = os.environ
    try:
        credentials = registry_credentials(
            token_file=getattr(args, "token_file", None), ca_cert=getattr(args, "ca_cert", None)
        )
        tls = InferenceTLS.from_flags(
            args.tls_cert or env.get("MODELREG_TLS_CERT"),
            args.tls_key or env.get("MODELREG_TLS_KEY"),
            args.tls_client_ca or env.get("MODELREG_TLS_CLIENT_CA"),
        )
    except StartupError as e:
        print(f"modelreg agent: {e.message}", file=sys.stderr)
        return e.exit_code
    config = AgentConfig(
        registry=args.registry or args.address,
        credentials=credentials,
        keep_warm=keep_warm,
        models=models,
        cache_dir=Path(args.cache_dir or os.environ.get("MODELREG_AGENT_CACHE_DIR") or ".modelreg-agent"),
        cache_max_bytes=args.cache_max_bytes or 10 * 1024**3,
        agent_id=args.agent_id or "",
        providers=tuple(args.providers or ()),
        intra_op_threads=args.intra_op_threads,
        report_interval=args.report_interval,
        retry_initial=args.retry_initial,
        retry_max=args.retry_max,
        **({"node": args.node} if args.node else {}),
    )
    try:
        metrics, default = metrics_address(args)
        asyncio.run(serve(config, listen, metrics, metrics_optional=default, tls=tls))
    except KeyboardInterrupt:
        pass
    except StartupError as e:
        print(f"modelreg agent: {e.message}", file=sys.stderr)
        return e.exit_code
    return 0


def followed_models(values: list[str]) -> tuple[str, ...]:
    """The --model values as `model` or `model@alias` (`@production` is the default)."""
    follow: dict[str, str] = {}
    for value in values:
        m, sep, alias = value.removeprefix("models/").partition("@")
        alias = alias.lower()
        if not MODEL_ID.match(m):
            raise UsageError(
                f"--model {m!r} is not a model id: use 1 to 63 lowercase letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit (for example --model fraud-detector)"
            )
        if sep and alias != "production" and (not ALIAS.match(alias) or alias in NOT_ALIASES):
            raise UsageError(
                f"--model {value!r}: {alias!r} is not an alias an agent can follow; use NAME (production) or "
                "NAME@ALIAS with a named alias like detector@champion"
            )
        entry = f"{m}@{alias}" if sep and alias != "production" else m
        if follow.get(m, entry) != entry:
            raise UsageError(f"--model {m!r} is given twice ({follow[m]} and {entry}); an agent serves a model once")
        follow[m] = entry
    return tuple(follow.values())


def metrics_address(args: argparse.Namespace) -> tuple[tuple[str, int] | None, bool]:
    """Where /metrics is served: --metrics-listen, else --metrics-port (on --metrics-host),
    else $MODELREG_METRICS_ADDRESS, else the default; None when turned off. The flag says
    whether it is the default."""
    from modelreg_runtime.metrics_http import MetricsAddressError, parse_listen

    if args.metrics_listen is not None:
        value, flag = args.metrics_listen, "--metrics-listen"
    elif args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise UsageError(f"--metrics-port {args.metrics_port} is not a port; use 0 to 65535 (0 picks one)")
        value, flag = f"{args.metrics_host}:{args.metrics_port}", "--metrics-port"
    elif "MODELREG_METRICS_ADDRESS" in os.environ:
        value, flag = os.environ["MODELREG_METRICS_ADDRESS"], "MODELREG_METRICS_ADDRESS"
    else:
        return parse_listen(DEFAULT_METRICS), True
    try:
        return parse_listen(value, flag), False
    except MetricsAddressError as e:
        raise UsageError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """`python -m serving_agent [flags]`: the same as `modelreg agent [flags]`."""
    parser = argparse.ArgumentParser(prog="python -m serving_agent", description=DESCRIPTION, parents=[common_parser()])
    add_arguments(parser)
    return execute(parser.parse_args(argv))
