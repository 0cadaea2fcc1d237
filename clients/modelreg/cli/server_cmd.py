"""`modelreg server`: run the registry."""

from __future__ import annotations

import logging
from pathlib import Path


def register(sub, common) -> None:
    p = sub.add_parser(
        "server",
        parents=[common],
        help="run the registry server",
        description="Run the registry. With no database URL it starts an embedded Postgres in the data directory.",
    )
    p.add_argument("--listen", dest="listen", help="listen address (default: $MODELREG_ADDRESS or 127.0.0.1:50051)")
    p.add_argument("--database-url", help="Postgres URL (default: $MODELREG_DATABASE_URL, else embedded Postgres)")
    p.add_argument("--data-dir", help="embedded data directory (default: $MODELREG_DATA_DIR or ./.modelreg)")
    p.add_argument("--artifacts", help="artifact store: a directory or s3://bucket/prefix (default: $MODELREG_ARTIFACTS)")
    p.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    p.set_defaults(func=run)


def run(args) -> int:
    from registry_server.app import run_server
    from registry_server.config import Settings

    from modelreg.process import keep_freed_memory

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Artifact chunks of 1-4 MiB pass through every transfer: keep their pages for reuse.
    keep_freed_memory(mmap_threshold=8 << 20, trim_threshold=64 << 20)
    address = args.listen or args.address
    return run_server(
        lambda: Settings.from_env(
            address=address,
            database_url=args.database_url,
            data_dir=Path(args.data_dir) if args.data_dir else None,
            artifacts=args.artifacts,
        )
    )
