"""`python -m benchmarks.chaos [--quick] [--only ID ...] [--out PATH] [--jobs N] [--database-url URL]`:
runs the chaos scenarios against real processes on loopback, prints one table and writes the
JSON (default benchmarks/results/chaos.json). Exits 1 if any invariant broke.

`--jobs N` runs N scenarios at once, each in a process of its own (the tests do, to keep the
suite short: the scenarios mostly wait on outages and restarts). `--database-url` names a
running Postgres (an admin URL) on which scenarios whose fault is not Postgres make a fresh
database each, instead of starting a Postgres of their own."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from benchmarks.chaos.report import Row, table, write
from benchmarks.chaos.scenarios import SCENARIOS
from benchmarks.chaos.scenarios.common import Size

RESULTS = Path(__file__).resolve().parent.parent / "results" / "chaos.json"


def run_one(name: str, size: Size, keep: bool) -> Row:
    work = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
    t0 = time.monotonic()
    print(f"[chaos] {name} ({size.label}) in {work}", file=sys.stderr, flush=True)
    try:
        row = SCENARIOS[name](work, size)
    except Exception as e:  # noqa: BLE001 - a crashed scenario is a failed row, the rest still run
        traceback.print_exc()
        row = Row(name, "ops", 0, 0, 0, 0, None, None, violations=[f"scenario crashed: {e!r}"])
    row.key = name
    print(
        f"[chaos] {name}: {time.monotonic() - t0:.0f} s, {'ok' if row.ok else row.violations}",
        file=sys.stderr,
        flush=True,
    )
    if row.ok and not keep:
        shutil.rmtree(work, ignore_errors=True)
    return row


def database_factory(admin_url: str):
    """A function that creates a fresh database on `admin_url`'s server and returns its URL."""

    def make() -> str:
        import asyncpg

        name = f"chaos_{uuid.uuid4().hex[:12]}"

        async def create() -> None:
            conn = await asyncpg.connect(admin_url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return urlparse(admin_url)._replace(path=f"/{name}").geturl()

    return make


def run_child(name: str, args: argparse.Namespace) -> Row:
    """One scenario in a process of its own; its row comes back through a JSON file."""
    with tempfile.TemporaryDirectory(prefix="chaos-job-") as d:
        out = Path(d) / "row.json"
        cmd = [sys.executable, "-m", "benchmarks.chaos", "--only", name, "--out", str(out)]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--database-url", args.database_url] if args.database_url else []
        cmd += ["--keep"] if args.keep else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write(proc.stderr)
        if not out.exists():
            return Row(
                name, "ops", 0, 0, 0, 0, None, None, violations=[f"scenario process failed: {proc.stderr[-800:]}"]
            )
        return Row(**json.loads(out.read_text())["rows"][0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    p.add_argument("--quick", action="store_true", help="the small sizes `make test` uses")
    p.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run only these scenarios")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep every scenario's work directory")
    p.add_argument("--jobs", type=int, default=1, help="scenarios at once, each in its own process")
    p.add_argument("--database-url", help="a running Postgres for the scenarios whose fault is not Postgres")
    args = p.parse_args(argv)
    names = args.only or list(SCENARIOS)
    if args.jobs > 1:
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda n: run_child(n, args), names))
    else:
        size = Size(quick=args.quick, database=database_factory(args.database_url) if args.database_url else None)
        rows = [run_one(name, size, args.keep) for name in names]
    print(table(rows))
    for r in rows:
        for v in r.violations:
            print(f"VIOLATION {r.scenario}: {v}")
    write(rows, args.out, quick=args.quick)
    print(f"wrote {args.out}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
