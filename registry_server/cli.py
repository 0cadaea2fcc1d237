"""`modelreg server` and `python -m registry_server`: run the registry.

Importing this module is cheap and needs no extra: the `modelreg` command line adds its
parser to every invocation. The registry itself (asyncpg, the embedded Postgres, minio) is
imported only when the command runs, after `modelreg_runtime.extras.require` has checked the
server extra is installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from modelreg.cli import UsageError, common_parser, execute
from modelreg_runtime.extras import MissingExtra, require

COMMAND = "server"
DESCRIPTION = "Run the registry. With no database URL it starts an embedded Postgres in the data directory."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", dest="listen", help="listen address (default: $MODELREG_ADDRESS or 127.0.0.1:50051)")
    p.add_argument("--database-url", help="Postgres URL (default: $MODELREG_DATABASE_URL, else embedded Postgres)")
    p.add_argument("--data-dir", help="embedded data directory (default: $MODELREG_DATA_DIR or ./.modelreg)")
    p.add_argument(
        "--artifacts", help="artifact store: a directory or s3://bucket/prefix (default: $MODELREG_ARTIFACTS)"
    )
    p.add_argument(
        "--metrics-listen",
        metavar="ADDR",
        help="serve Prometheus metrics on http://ADDR/metrics (default: $MODELREG_METRICS_ADDRESS, else off)",
    )
    p.add_argument(
        "--http-listen",
        metavar="ADDR",
        help="serve the web console and the JSON API on http://ADDR/ (default: $MODELREG_HTTP_ADDRESS, else "
        "127.0.0.1:8080; 'off' disables them)",
    )
    p.add_argument(
        "--auth",
        choices=("auto", "on", "off"),
        default=None,
        help="require tokens (default: $MODELREG_AUTH or auto: off when listening only on loopback, else on)",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM; $MODELREG_TLS_CERT)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM; $MODELREG_TLS_KEY)")
    p.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="require client certificates signed by this CA (mTLS; $MODELREG_TLS_CLIENT_CA)",
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    p.add_argument(
        "--log-format", choices=("text", "json"), default=None, help="log lines (default: $MODELREG_LOG_FORMAT or text)"
    )
    p.set_defaults(func=run, command=COMMAND)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Adds `server` to the `modelreg` command line."""
    p = sub.add_parser(COMMAND, parents=[common], help="run the registry server", description=DESCRIPTION)
    add_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        require("server", f"modelreg {COMMAND}")
    except MissingExtra as e:
        print(e, file=sys.stderr)
        return 2
    from modelreg_runtime import logs, tracing
    from modelreg_runtime.process import keep_freed_memory
    from registry_server.app import run_server
    from registry_server.config import Settings

    try:
        logs.configure(args.log_level, args.log_format)
    except ValueError as e:
        raise UsageError(str(e)) from None
    tracing.setup(tracing.REGISTRY)  # only when OTEL_* asks for it
    # Artifact chunks of 1-4 MiB pass through every transfer: keep their pages for reuse.
    keep_freed_memory(mmap_threshold=8 << 20, trim_threshold=64 << 20)
    address = args.listen or args.address
    return run_server(
        lambda: Settings.from_env(
            address=address,
            database_url=args.database_url,
            data_dir=Path(args.data_dir) if args.data_dir else None,
            artifacts=args.artifacts,
            metrics_address=args.metrics_listen,
            http_address=args.http_listen,
            auth=args.auth,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
        )
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m registry_server [flags]`: the same as `modelreg server [flags]`."""
    parser = argparse.ArgumentParser(
        prog="python -m registry_server", description=DESCRIPTION, parents=[common_parser()]
    )
    add_arguments(parser)
    return execute(parser.parse_args(argv))
