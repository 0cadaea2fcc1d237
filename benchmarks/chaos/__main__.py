"""`python -m benchmarks.chaos [--quick] [--only ID ...] [--out PATH]`: runs the chaos scenarios
against real processes on loopback, prints one table and writes the JSON (default
benchmarks/results/chaos.json). Exits 1 if any invariant broke."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

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
    print(
        f"[chaos] {name}: {time.monotonic() - t0:.0f} s, {'ok' if row.ok else row.violations}",
        file=sys.stderr,
        flush=True,
    )
    if row.ok and not keep:
        shutil.rmtree(work, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    p.add_argument("--quick", action="store_true", help="the small sizes `make test` uses")
    p.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run only these scenarios")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep every scenario's work directory")
    args = p.parse_args(argv)
    size = Size(quick=args.quick)
    rows = [run_one(name, size, args.keep) for name in (args.only or SCENARIOS)]
    print(table(rows))
    for r in rows:
        for v in r.violations:
            print(f"VIOLATION {r.scenario}: {v}")
    write(rows, args.out, quick=args.quick)
    print(f"wrote {args.out}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
