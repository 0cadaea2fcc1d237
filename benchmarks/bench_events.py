"""Goals 6 and 7: promotion -> event at the watchers, and fan-out to 1,000 watchers.

Watcher processes (`load_events`) hold WatchEvents streams on one model; once all have
their snapshot, the harness promotes versions one at a time (alternating two versions, a
pause between promotions) and each watcher stamps the promotion's STAGE_CHANGED event on
arrival. Latency = arrival - the moment the promote call was sent (same clock).
Floor: the promotion's writes in a bare asyncpg transaction with NOTIFY, until a LISTENing
connection has it. TF Serving's default is a 1 s file-system poll: a new version is seen
after 0..1 s, so ~500 ms at p50 and ~990 ms at p99 (computed, not measured).
Goal 7 also counts the Postgres connections that LISTEN for events (application_name
`modelreg-listener`, or last query LISTEN) while 1,000 watchers are attached.
"""

from __future__ import annotations

import json
import subprocess
import time

from benchmarks import fixtures
from benchmarks.common import ratio
from benchmarks.env import PY, REPO, log
from benchmarks.report import Row, not_measurable
from benchmarks.stats import median, percentile

NAME = "events"
GOALS = "6,7"
MODEL = "bench-events"
NEEDS = "WatchEvents served by the registry (issue 4)"


def _listeners(env) -> int:
    out = env.postgres().psql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'modelreg_bench'"
        " AND (application_name = 'modelreg-listener' OR query ILIKE 'LISTEN%');"
    )
    nums = [int(tok) for tok in out.split() if tok.isdigit()]
    return nums[0] if nums else -1


def _round(env, watchers: int, promotions: int, procs: int) -> dict:
    """One round: `watchers` streams in `procs` processes, `promotions` promotions."""
    from modelreg import Client

    running = []
    for i in range(procs):
        share = watchers // procs + (1 if i < watchers % procs else 0)
        spec = {"target": env.ours, "model": MODEL, "watchers": share}
        running.append(
            subprocess.Popen(
                [PY, "-m", "benchmarks.load_events", json.dumps(spec)],
                cwd=str(REPO),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in running:
        line = p.stdout.readline().strip()
        if line != "ready":
            for q in running:
                q.kill()
            detail = line or p.stderr.read()[-1500:]
            raise RuntimeError(f"watchers did not start: {detail}")
    sent: list[tuple[int, int, float]] = []  # (first, last sequence of the promotion, sent at)
    with Client(env.ours, actor="bench") as c:
        current = c.get_version(MODEL, "production").version
        previous = c.promote(MODEL, 2 if current == 1 else 1, "production", reason="bench warm-up").sequence
        current = 2 if current == 1 else 1
        for i in range(promotions):
            target = 2 if (current + i) % 2 == 1 else 1  # never the one already in production
            t0 = time.time()
            resp = c.promote(MODEL, target, "production", reason="bench")
            sent.append((previous + 1, resp.sequence, t0))
            previous = resp.sequence
            time.sleep(0.1)
        time.sleep(0.5)
    listeners = _listeners(env)
    received: list[list[list]] = []  # per watcher: [sequence, arrival] pairs
    for p in running:
        out, err = p.communicate("stop\n", timeout=120)
        received += json.loads(out.strip().splitlines()[-1])["received"]
    all_lat, last_lat, missing = [], [], 0
    for first, last, t0 in sent:
        # Each watcher's first event of this promotion's transaction.
        lat = []
        for events in received:
            times = [t for seq, t in events if first <= seq <= last]
            if times:
                lat.append(min(times) - t0)
        missing += watchers - len(lat)
        all_lat += lat
        if len(lat) == watchers:
            last_lat.append(max(lat))
    if not all_lat:
        raise RuntimeError(f"no watcher received any of the {len(sent)} promotions' events")
    return {"all": all_lat, "last": last_lat, "missing": missing, "listeners": listeners}


def run(env, cfg) -> list[Row]:
    fixtures.ours_model(env, MODEL, 2, production=1)
    fixtures.ours_model(env, "bench-events-floor", 2, production=1)
    w6, w7 = (10, 50) if cfg.quick else (100, 1000)
    promotions = 5 if cfg.quick else 30
    try:
        r6 = [_round(env, w6, promotions, 1) for _ in range(cfg.reps)]
    except RuntimeError as e:
        if "UNIMPLEMENTED" in str(e):
            return [
                not_measurable("6", NAME, "promotion -> event at a watcher", NEEDS),
                not_measurable("7", NAME, "last of 1,000 watchers gets the event", NEEDS),
            ]
        raise
    floor = env.floor_call(
        "notify",
        {
            "database_url": env.ours_url,
            "model": "bench-events-floor",
            "versions": [1, 2],
            "count": 20 if cfg.quick else 100,
        },
    )
    r7 = [_round(env, w7, promotions, 1 if cfg.quick else 2) for _ in range(cfg.reps)]
    ms = 1000.0
    p50 = median([percentile(r["all"], 50) * ms for r in r6])
    p99 = median([percentile(r["all"], 99) * ms for r in r6])
    f50 = percentile(floor["latencies"], 50) * ms
    f99 = percentile(floor["latencies"], 99) * ms
    last50 = median([percentile(r["last"], 50) * ms for r in r7])
    missing6, missing7 = sum(r["missing"] for r in r6), sum(r["missing"] for r in r7)
    listeners = max(r["listeners"] for r in r7)
    detail = {
        "watchers": [w6, w7],
        "promotions_per_round": promotions,
        "rounds": cfg.reps,
        "p50_ms_per_round": [percentile(r["all"], 50) * ms for r in r6],
        "p99_ms_per_round": [percentile(r["all"], 99) * ms for r in r6],
        "last_p50_ms_per_round": [percentile(r["last"], 50) * ms for r in r7],
        "floor_p50_ms": f50,
        "floor_p99_ms": f99,
        "missing": [missing6, missing7],
        "listeners": listeners,
    }
    log(f"  events: p50 {p50:.1f} ms p99 {p99:.1f} ms (floor {f50:.1f}/{f99:.1f}); last of {w7}: {last50:.1f} ms")
    miss6 = f"{missing6} deliveries missing" if missing6 else "every watcher got every event"
    miss7 = f"{missing7} deliveries missing" if missing7 else "every watcher got every event"
    return [
        Row(
            goal="6",
            bench=NAME,
            figure=f"promotion -> event at a watcher p50, {w6} watchers",
            ours=p50,
            unit="ms",
            ref=f50,
            ref_label="floor: tx + NOTIFY to a LISTENer",
            ratio=ratio(p50, f50),
            ratio_of="ours/floor",
            target=("<=", 5),
            goal_on="ours",
            note=miss6,
            details=detail,
        ),
        Row(
            goal="6",
            bench=NAME,
            figure=f"promotion -> event at a watcher p99, {w6} watchers",
            ours=p99,
            unit="ms",
            ref=f99,
            ref_label="floor: tx + NOTIFY to a LISTENer",
            ratio=ratio(p99, f99),
            ratio_of="ours/floor",
            target=("<=", 20),
            goal_on="ours",
            details=detail,
        ),
        Row(
            goal="6",
            bench=NAME,
            figure=f"promotion -> event p50 vs TF Serving's 1 s poll, {w6} watchers",
            ours=p50,
            unit="ms",
            ref=500.0,
            ref_label="TF Serving default poll, computed",
            ratio=ratio(500.0, p50),
            ratio_of="TF poll/ours",
            details=detail,
        ),
        Row(
            goal="7",
            bench=NAME,
            figure=f"last of {w7} watchers gets the event, p50",
            ours=last50,
            unit="ms",
            target=("<=", 50),
            goal_on="ours",
            note=miss7,
            details=detail,
        ),
        Row(
            goal="7",
            bench=NAME,
            figure=f"Postgres LISTEN connections, 1 registry process, {w7} watchers",
            ours=float(listeners),
            unit="conn",
            target=("<=", 1),
            goal_on="ours",
            details=detail,
        ),
    ]
