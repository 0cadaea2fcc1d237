"""Smoke test of `make bench`: every implemented benchmark runs in its tiny --quick mode
against our server only (no MLflow peer, so no venv is created), and the table and the
JSON have the promised shape. Never a wall-clock assertion: only that figures exist and
are positive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MEASURED = {
    "read_throughput",
    "read_latency",
    "history",
    "promotion",
    "gates",
    "registration",
    "events",
    "transfer",
    "s3_transfer",
    "agent",
    "oip",
    "swaps",
    "router",
    "metrics",
    "auth",
    "console",
}


@pytest.mark.timeout(240)
def test_quick_bench_prints_table_and_writes_json(tmp_path):
    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-peer", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("goal"))
    for column in ("figure", "ours", "peer or floor", "ratio", "goal", "met?"):
        assert column in header
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["peer"] is None and doc["failures"] == {}
    rows = doc["rows"]
    assert {r["bench"] for r in rows} >= MEASURED
    # Every benchmark measured something: a broken one must not hide behind "not measurable".
    assert {r["bench"] for r in rows if r["ours"] is not None} >= MEASURED, [
        r["note"] for r in rows if r["ours"] is None
    ]
    for r in rows:
        for key in ("goal", "bench", "figure", "ours", "unit", "ref", "ratio", "goal_text", "met", "note"):
            assert key in r, (key, r)
        if r["note"].startswith("not measurable yet"):
            assert r["ours"] is None
            continue
        # Every measured figure printed in the table is there; rates, times and sizes are positive
        # (a count of failed requests may be 0).
        assert r["ours"] is not None and r["ours"] >= 0, r
        if r["unit"] in ("req/s", "ver/s", "µs", "ms", "GiB/s", "%"):
            assert r["ours"] > 0, r
        assert r["figure"] in proc.stdout
        if r["ref"] is not None:
            assert r["ref"] > 0, r
        if r["ratio"] is not None:  # a distance from a target may be exactly 0
            assert r["ratio"] >= 0, r
        if r["target"] is not None:
            assert r["met"] in (True, False), r
    goals = {r["goal"] for r in rows}
    assert {str(g) for g in range(1, 13)} <= goals
    # A goal that cannot be measured here is a row that says what it needs, not silence.
    for r in rows:
        if r["ours"] is None:
            assert "needs" in r["note"], r
    # Registration numbered the versions exactly 1..N.
    (check,) = [r for r in rows if r["bench"] == "registration" and "1..N" in r["figure"]]
    assert check["ours"] == 1.0, check["note"]
