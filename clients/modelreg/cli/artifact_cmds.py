"""Artifact commands: `modelreg url` (a presigned download URL straight from the S3 store)."""

from __future__ import annotations

import sys

from modelreg.cli import UsageError, connect
from modelreg.cli import output as out

MAX_EXPIRES = 7 * 24 * 3600


def register(sub, common) -> None:
    p = sub.add_parser(
        "url",
        parents=[common],
        help="print a time-limited presigned URL of a version's artifact (S3 store only)",
        description=(
            "Print a presigned HTTP GET URL for a version's artifact, so a user or agent fetches the bytes "
            'straight from MinIO/S3 (curl -o FILE "$(modelreg url NAME 3)"). Verify the sha256 afterwards '
            "(shown with -o json). A registry that stores artifacts in a local directory answers "
            "FAILED_PRECONDITION; use 'modelreg download' there."
        ),
    )
    p.add_argument("name", help="model name, or MODEL@ALIAS")
    p.add_argument("version", nargs="?", help="number, stage or alias (default: production)")
    p.add_argument(
        "--expires",
        type=int,
        default=3600,
        metavar="SECONDS",
        help=f"how long the URL stays valid, 1..{MAX_EXPIRES} (default: 3600)",
    )
    p.set_defaults(func=url)


def url(args) -> int:
    if not 1 <= args.expires <= MAX_EXPIRES:
        raise UsageError(f"--expires must be 1..{MAX_EXPIRES} seconds (7 days); got {args.expires}")
    with connect(args) as c:
        resp = c.artifact_url(args.name, args.version, expires_in=args.expires)
    if args.output == "json":
        out.print_json(resp)
    else:
        print(resp.url)
        if sys.stderr.isatty():
            print(
                f"{resp.model_version}: {resp.filename}, {out.human_size(resp.size_bytes)}, "
                f"sha256 {resp.sha256}, expires {out.when(resp.expire_time)} UTC",
                file=sys.stderr,
            )
    return 0
