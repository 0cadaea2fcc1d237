"""Issue 11's speed goals: what identity and access cost, auth on vs off side by side in one run.

`modelreg server` processes on the database our usual server seeded: replica A with
MODELREG_AUTH=on (it bootstraps the admin token into its data dir), for the revoke figure
replica B (auth on too), a fresh auth-off process ("off"), and an A/A control: a second fresh
auth-off process. Through A's AuthService the harness creates a `viewer` and a `releaser`
principal in project `default` (where the seeded models live), each with a token.

1. Revoke propagation: a fresh viewer token is used on A and B (so each has it cached), then
   revoked through A; pollers call GetModelVersion with it in a loop on A and on B and stamp
   the first UNAUTHENTICATED answer, timed from sending RevokeToken (which includes the
   revoke's own commit). 20 revokes; the slowest is the figure. Goal: under 1 s on every
   replica. B is stopped afterwards so that it does not share the cores with what follows.
2. Reads and promotions, off (no token) vs on (A; the viewer's token for reads, the
   releaser's for promotions): GetModelVersion by number (20 versions cycled) and by alias
   (`versions/production`) at 16 clients, as `read_throughput`; GetModelVersion p50/p99 at 1
   client, as `read_latency`; PromoteModelVersion p50/p99 at 1 client, as `promotion` (one
   two-version model per side). The two sides are interleaved from one load process
   (load_grpc.interleaved: 0.5 s turns at 16 clients, 0.1 s at 1 client, 10 promotions,
   in ABBA order), so what else the machine does at a moment falls on both; 5 rounds.
   Throughput ratios are the median over adjacent turn pairs, latency ratios the median
   over rounds of each round's on/off; the figures are medians of the rounds. The A/A
   control runs the by-number load the same way against off and the second auth-off
   process: the ratio between two identical sides is what this run resolves. Each
   registry's CPU per call (reads by number, promotions) is context: a busy shared machine
   disturbs it less than wall-clock figures.
3. Auth's own work per read, in-process: the CPU of `Access.authenticate` + `Access.require`
   with the viewer's token (warm caches) minus the same with auth off, next to the
   registry's CPU per call.
Goals: read throughput (off/on) and read p50 (on/off) ≤ 1.05; promotion p99 (on/off) ≤ 1.1.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks import fixtures
from benchmarks.common import med, reps_detail
from benchmarks.env import log
from benchmarks.report import Row
from benchmarks.stats import median, percentile

NAME = "auth"
GOALS = "i11"  # issue 11's Speed section (goal 11 of issue 7 is the transfer one)
MODEL = "bench-read"  # the read benchmarks' model: 20 versions, 10 in production
PROMOTE = "bench-auth-promote"
READ_LIMIT = 1.05
PROMOTE_LIMIT = 1.1
REVOKE_LIMIT_MS = 1000.0
REVOKE_TIMEOUT_S = 5.0


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _admin_token(address: str, data_dir: Path, timeout: float = 30) -> str:
    """A's bootstrap token, once it authenticates: the server writes the file just after it
    starts listening (and before 7458264 did so before the token's transaction committed,
    so a call made the moment the file appeared could be UNAUTHENTICATED)."""
    import grpc

    from modelreg.v1 import auth_service_pb2 as au
    from modelreg.v1 import auth_service_pb2_grpc as au_grpc

    path = data_dir / "admin.token"
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = au_grpc.AuthServiceStub(channel)
        while True:
            secret = path.read_text().strip() if path.exists() else ""
            if secret:
                try:
                    stub.WhoAmI(au.WhoAmIRequest(), metadata=_bearer(secret), timeout=10)
                    return secret
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNAUTHENTICATED:
                        raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"no working token in {path} {timeout:.0f}s after the auth-on server started")
            time.sleep(0.05)


def _principal(channel, admin: str, name: str, role: str) -> str:
    """Creates `name` bound to `role` in project default; returns a fresh token's secret."""
    from modelreg.v1 import auth_service_pb2 as au
    from modelreg.v1 import auth_service_pb2_grpc as au_grpc

    stub = au_grpc.AuthServiceStub(channel)
    md = _bearer(admin)
    stub.CreatePrincipal(au.CreatePrincipalRequest(principal=au.Principal(principal_id=name)), metadata=md, timeout=10)
    stub.GrantRole(
        au.GrantRoleRequest(binding=au.RoleBinding(principal=name, role=role, project="default")),
        metadata=md,
        timeout=10,
    )
    return stub.CreateToken(au.CreateTokenRequest(token_id=f"{name}-token", principal=name), metadata=md).token


def _cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


# ---------------------------------------------------------------- revoke propagation


async def _first_unauthenticated(stub, request, metadata, t0: float) -> float | None:
    """Calls GetModelVersion in a loop; seconds from `t0` to the first UNAUTHENTICATED."""
    import grpc

    while time.perf_counter() - t0 < REVOKE_TIMEOUT_S:
        try:
            await stub.GetModelVersion(request, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                return time.perf_counter() - t0
            raise
    return None


async def _revokes(replicas: dict[str, str], admin: str, count: int) -> dict[str, list[float | None]]:
    """`count` revokes through replica "A"; per replica, seconds from sending RevokeToken to
    its first UNAUTHENTICATED answer (None: not within REVOKE_TIMEOUT_S); "revoke_call": the
    RevokeToken call's own seconds."""
    import grpc

    from modelreg.v1 import auth_service_pb2 as au
    from modelreg.v1 import auth_service_pb2_grpc as au_grpc
    from modelreg.v1 import registry_service_pb2 as rs
    from modelreg.v1 import registry_service_pb2_grpc as rs_grpc

    channels = {k: grpc.aio.insecure_channel(a) for k, a in replicas.items()}
    try:
        auth = au_grpc.AuthServiceStub(channels["A"])
        stubs = {k: rs_grpc.RegistryServiceStub(c) for k, c in channels.items()}
        read = rs.GetModelVersionRequest(name=f"models/{MODEL}/versions/1")
        await auth.CreatePrincipal(
            au.CreatePrincipalRequest(principal=au.Principal(principal_id="bench-revoked")), metadata=_bearer(admin)
        )
        await auth.GrantRole(
            au.GrantRoleRequest(binding=au.RoleBinding(principal="bench-revoked", role="viewer", project="default")),
            metadata=_bearer(admin),
        )
        out: dict[str, list[float | None]] = {k: [] for k in (*replicas, "revoke_call")}
        for i in range(count):
            name = f"bench-revoked-{i}"
            created = await auth.CreateToken(
                au.CreateTokenRequest(token_id=name, principal="bench-revoked"), metadata=_bearer(admin)
            )
            md = _bearer(created.token)
            # Both replicas answer with it (and so have it cached) before it is revoked; the
            # creation's own ACCESS_CHANGED has reached B by the second round.
            for _ in range(2):
                for stub in stubs.values():
                    await stub.GetModelVersion(read, metadata=md, timeout=10)
                await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            pollers = {k: asyncio.create_task(_first_unauthenticated(s, read, md, t0)) for k, s in stubs.items()}
            await auth.RevokeToken(au.RevokeTokenRequest(name=name), metadata=_bearer(admin))
            out["revoke_call"].append(time.perf_counter() - t0)
            for k, task in pollers.items():
                out[k].append(await task)
        return out
    finally:
        for c in channels.values():
            await c.close()


def _revoke_rows(env, cfg, a: str, admin: str) -> list[Row]:
    proc_b, b = env.spawn_server("auth-on-b", env.ours_url, {"MODELREG_AUTH": "on"})
    try:
        count = 3 if cfg.quick else 20
        got = asyncio.run(_revokes({"A": a, "B": b}, admin, count))
    finally:
        proc_b.terminate()
        proc_b.wait(15)
        env.procs.remove(proc_b)
    calls = [t * 1000 for t in got["revoke_call"] if t is not None]
    rows = []
    for key, what in (("B", "another replica (B)"), ("A", "the replica that revoked (A)")):
        ms = [t * 1000 for t in got[key] if t is not None]
        missed = sum(1 for t in got[key] if t is None)
        log(f"  revoke -> UNAUTHENTICATED on {key}: " + ", ".join(f"{t:.1f}" for t in ms) + f" ms; {missed} missed")
        worst = REVOKE_TIMEOUT_S * 1000 if missed else max(ms)
        note = (
            f"p50 {percentile(ms, 50):.1f} ms over {len(got[key])} revokes; the RevokeToken call itself "
            f"p50 {percentile(calls, 50):.1f} ms, slowest {max(calls):.1f} ms"
        )
        if missed:
            note += f"; {missed} still accepted after {REVOKE_TIMEOUT_S:.0f} s"
        rows.append(
            Row(
                goal=GOALS,
                bench=NAME,
                figure=f"token revoked on A -> UNAUTHENTICATED on {what}, slowest",
                ours=worst,
                unit="ms",
                ref_label="from sending RevokeToken",
                target=("<", REVOKE_LIMIT_MS),
                goal_on="ours",
                note=note,
                details={"ms": ms, "missed": missed, "revoke_call_ms": calls},
            )
        )
    return rows


# ---------------------------------------------------------------- auth's own work per call


async def _auth_work_us(database_url: str, secret: str, calls: int) -> dict[str, float]:
    """CPU µs per (authenticate + require READ on the read model), auth on with `secret`
    (caches warm) and off, in this process against the same database; median of 5
    alternating batches."""
    from registry_server.domain.access import Permission
    from registry_server.storage import db
    from registry_server.storage.access import AccessStore
    from registry_server.storage.outbox import Outbox
    from registry_server.usecases.access import Access

    pool = await db.open_database(database_url, 2)
    try:
        sides = {"on": Access(AccessStore(Outbox(pool)), True), "off": Access(AccessStore(Outbox(pool)), False)}
        authorization = {"on": f"Bearer {secret}", "off": None}
        got: dict[str, list[float]] = {k: [] for k in sides}
        for batch in range(6):  # the first is warm-up
            for side in ("on", "off") if batch % 2 else ("off", "on"):
                access, header = sides[side], authorization[side]
                t0 = time.thread_time()  # CPU of this thread: what other processes do is not in it
                for _ in range(calls):
                    caller = await access.authenticate(header, (), "bench")
                    await access.require(caller, Permission.READ, model=MODEL)
                if batch:
                    got[side].append((time.thread_time() - t0) / calls * 1e6)
        return {k: median(v) for k, v in got.items()}
    finally:
        await pool.close()


# ---------------------------------------------------------------- reads and promotions


def _paired(res: dict[str, list[dict]], num: str, den: str, key: str) -> float | None:
    """The median over rounds of num[key] / den[key] (the two ran in the same turns)."""
    pairs = [a[key] / b[key] for a, b in zip(res[num], res[den], strict=True) if b[key]]
    return median(pairs) if pairs else None


def _turns(duration: float, slice_s: float) -> dict:
    """Turns of `slice_s` seconds adding up to about `duration` seconds per side."""
    slice_s = min(slice_s, duration)
    return {"slice_s": slice_s, "slices": max(1, round(duration / slice_s))}


def run(env, cfg) -> list[Row]:
    import grpc

    n = 20
    fixtures.ours_model(env, MODEL, n, production=n // 2)
    fixtures.ours_model(env, f"{PROMOTE}-off", 2, production=1)
    fixtures.ours_model(env, f"{PROMOTE}-on", 2, production=1)
    proc_a, on = env.spawn_server("auth-on-a", env.ours_url, {"MODELREG_AUTH": "on"})
    admin = _admin_token(on, env.tmp / "auth-on-a")
    with grpc.insecure_channel(on) as channel:
        viewer = _principal(channel, admin, "bench-viewer", "viewer")
        releaser = _principal(channel, admin, "bench-releaser", "releaser")

    rows = _revoke_rows(env, cfg, on, admin)

    # Both sides are fresh processes started together (our usual server has served every
    # benchmark before this one); the A/A control is a third, measured against "off" alone.
    # --quick stays short: our usual server as "off", no control.
    proc_off = proc_control = None
    off, off_pid = env.ours, env.ours_pid
    if not cfg.quick:
        proc_off, off = env.spawn_server("auth-off", env.ours_url, {"MODELREG_AUTH": "off"})
        off_pid = proc_off.pid
    pids = {"off": off_pid, "on": proc_a.pid}
    sides = {"off": {"target": off}, "on": {"target": on, "token": viewer}}
    if not cfg.quick:
        proc_control, control = env.spawn_server("auth-off-control", env.ours_url, {"MODELREG_AUTH": "off"})
        pids["control"], sides["control"] = proc_control.pid, {"target": control}
    by_number = [f"models/{MODEL}/versions/{i}" for i in range(1, n + 1)]
    many = {"op": "get", "concurrency": cfg.clients}
    promote_names = {side: [f"models/{PROMOTE}-{side}/versions/{v}" for v in (1, 2)] for side in ("off", "on")}
    # kind: (the spec both sides share, the sides, one side's turn)
    one = {"op": "get", "concurrency": 1, "names": [by_number[n // 2 - 1]]}
    promotions = {"slice_calls": 10, "slices": max(1, cfg.promote_count // 10)}
    loads = {
        "number": (dict(many, names=by_number), ["on", "off"], _turns(cfg.duration, 0.5)),
        "alias": (dict(many, names=[f"models/{MODEL}/versions/production"]), ["on", "off"], _turns(cfg.duration, 0.5)),
        "one": (one, ["on", "off"], _turns(cfg.lat_duration, 0.1)),
        "promote": ({"op": "promote", "concurrency": 1}, ["on", "off"], promotions),
    }
    if proc_control is not None:
        loads["aa"] = (dict(many, names=by_number), ["control", "off"], _turns(cfg.duration, 0.5))
    rounds = 1 if cfg.quick else max(cfg.reps, 5)
    res: dict[str, list[dict]] = {f"{k}_{s}": [] for k, (_, ss, _) in loads.items() for s in ss}
    pairs: dict[str, list[float]] = {}  # off/other throughput of the same turn index (adjacent turns)
    for r in range(rounds):
        for kind in list(loads) if r % 2 == 0 else list(reversed(loads)):
            shared, names, turn = loads[kind]
            order = names if r % 2 == 0 else list(reversed(names))
            side_specs = []
            for side in order:
                s = dict(sides[side])
                if kind == "promote":
                    s["names"] = promote_names[side]
                    if side == "on":
                        s["token"] = releaser
                side_specs.append(s)
            before = {s: _cpu_s(pids[s]) for s in order}
            got = dict(zip(order, env.load_interleaved(dict(shared, **turn, sides=side_specs)), strict=True))
            for side, summary in got.items():
                summary["cpu_us_per_call"] = (_cpu_s(pids[side]) - before[side]) / max(1, summary["count"]) * 1e6
                res[f"{kind}_{side}"].append(summary)
                if summary["errors"]:
                    log(f"  {kind} {side}: {summary['errors']} errors, e.g. {summary['error_samples']}")
                if side != "off":
                    pairs.setdefault(f"{kind}_{side}", []).extend(
                        a / b
                        for a, b in zip(got["off"]["slice_throughput"], summary["slice_throughput"], strict=True)
                        if b
                    )
            figures = "; ".join(
                f"{s} {got[s]['throughput']:.4g}/s p50 {got[s]['p50_us']:.0f}us p99 {got[s]['p99_us']:.0f}us"
                for s in names
            )
            log(f"  round {r + 1}/{rounds} {kind}: {figures}")
    for proc in (proc_a, proc_off, proc_control):
        if proc is not None:
            proc.terminate()

    work = asyncio.run(_auth_work_us(env.ours_url, viewer, 2_000 if cfg.quick else 20_000))
    log(f"  auth's own work per read, in-process: on {work['on']:.1f} µs, off {work['off']:.1f} µs")
    detail = {
        "throughput_per_round": reps_detail(res, "throughput"),
        "p50_us_per_round": reps_detail(res, "p50_us"),
        "p99_us_per_round": reps_detail(res, "p99_us"),
        "cpu_us_per_call_per_round": reps_detail(res, "cpu_us_per_call"),
        "throughput_off_over_side_per_turn_pair": {k: [round(x, 3) for x in v] for k, v in pairs.items()},
        "errors": {k: sum(r["errors"] for r in v) for k, v in res.items()},
        "auth_work_us": work,
        "ratio": "throughput: median over adjacent turn pairs of off/on; times and CPU: median over rounds of on/off",
    }

    def row(figure: str, key: str, metric: str, unit: str, limit: float | None, note: str = "", vs: str = "on") -> Row:
        if metric == "throughput":  # off/on: above 1 is what auth costs
            ratio_value, ratio_of = (median(pairs[f"{key}_{vs}"]) if pairs.get(f"{key}_{vs}") else None), f"off/{vs}"
        else:
            ratio_value, ratio_of = _paired(res, f"{key}_{vs}", f"{key}_off", metric), f"{vs}/off"
        return Row(
            goal=GOALS,
            bench=NAME,
            figure=figure,
            ours=med(res, f"{key}_{vs}", metric),
            unit=unit,
            ref=med(res, f"{key}_off", metric),
            ref_label="auth off",
            ratio=ratio_value,
            ratio_of=ratio_of,
            target=("<=", limit) if limit is not None else None,
            note=note,
            details=detail,
        )

    def p50s(key: str) -> str:
        return f"p50 {med(res, f'{key}_on', 'p50_us'):.0f} vs {med(res, f'{key}_off', 'p50_us'):.0f} µs"

    c = cfg.clients
    control_row = [
        row(f"A/A control: by number throughput, {c} clients, a second auth-off process vs auth off", "aa",
            "throughput", "req/s", None, "what this run resolves: the two sides are identical", vs="control")
    ] if proc_control is not None else []  # fmt: skip
    cpu_on = med(res, "number_on", "cpu_us_per_call")
    added = work["on"] - work["off"]
    rows += [
        row(f"GetModelVersion by number throughput, {c} clients, auth on vs off", "number", "throughput", "req/s",
            READ_LIMIT, p50s("number")),
        row(f"GetModelVersion by alias (production) throughput, {c} clients, auth on vs off", "alias", "throughput",
            "req/s", READ_LIMIT, p50s("alias")),
        row("GetModelVersion p50, 1 client, auth on vs off", "one", "p50_us", "µs", READ_LIMIT),
        row("GetModelVersion p99, 1 client, auth on vs off", "one", "p99_us", "µs", None),
        row("promotion p99, 1 client, auth on vs off", "promote", "p99_us", "µs", PROMOTE_LIMIT, p50s("promote")),
        row("promotion p50, 1 client, auth on vs off", "promote", "p50_us", "µs", None),
        *control_row,
        row(f"registry CPU per GetModelVersion by number, {c} clients, auth on vs off", "number",
            "cpu_us_per_call", "µs", None, "the serving process's user+system CPU over its turns, warm-up included"),
        row("registry CPU per promotion, 1 client, auth on vs off", "promote", "cpu_us_per_call", "µs", None,
            "the same way; steadier than p99 on a busy machine"),
        Row(
            goal=GOALS,
            bench=NAME,
            figure="auth's own work per read (Access.authenticate + require, in-process), on minus off",
            ours=added,
            unit="µs",
            ref=cpu_on,
            ref_label="registry CPU per call, auth on",
            ratio=added / cpu_on if cpu_on else None,
            ratio_of="added/call",
            note=f"on {work['on']:.1f} µs, off {work['off']:.1f} µs of CPU per call, warm caches: "
            f"{100 * added / cpu_on if cpu_on else 0:.1f} % of a call",
            details=detail,
        ),
    ]  # fmt: skip
    return rows
