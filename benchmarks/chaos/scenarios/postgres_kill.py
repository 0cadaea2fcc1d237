"""Postgres killed under load: 16 clients register (and a thread promotes) while Postgres is
SIGKILLed (embedded: the postmaster, which the server must bring back by itself) or crashed
with `pg_ctl -m immediate` (external: started again by the scenario after a few seconds, as
systemd would). Afterwards every acknowledged registration exists with verified bytes,
none is duplicated, nothing is half-visible, and every acknowledged promotion is in the
history. Time to recover: from the kill to the first acknowledgement after it."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from benchmarks.chaos import audit
from benchmarks.chaos.load import Promotions, Registrations
from benchmarks.chaos.procs import ExternalPostgres, Registry, wait_until
from benchmarks.chaos.report import Row
from benchmarks.chaos.scenarios.common import Size, client
from modelreg.v1 import resources_pb2 as res

MODEL = "chaos-pg"


def run(work: Path, size: Size, *, external: bool) -> Row:
    pg = ExternalPostgres(work / "pg") if external else None
    if pg:
        pg.start()
    url = pg.database("modelreg") if pg else None
    reg = Registry(work / "reg", database_url=url).start()
    clients = size.pick(4, 16)
    try:
        with client(reg.address) as c:
            wait_until(lambda: c.create_model(MODEL), 60, "the model created")
        regs = Registrations(reg.address, MODEL, clients=clients, size=2048, give_up=size.pick(45, 120)).start()
        proms = Promotions(reg.address, MODEL, regs, interval=0.2).start()
        time.sleep(size.pick(1.5, 5))
        killed_at = time.monotonic()
        if pg:
            pg.crash()
            time.sleep(size.pick(2, 5))
            pg.start()
        else:
            reg.kill_postgres()
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: regs.recovered_after(killed_at), size.pick(45, 120), "an acknowledgement")
        recover = regs.recovered_after(killed_at)
        time.sleep(size.pick(1.5, 10))
        proms.stop()
        regs.stop()
        found = audit.registrations(reg.address, MODEL, regs)
        with client(reg.address) as c:
            history = {
                int(t.model_version.rsplit("/", 1)[1]) for t in c.history(MODEL) if t.to_stage == res.STAGE_PRODUCTION
            }
            production = [mv.name for mv in c.list_versions(MODEL, stage="production")]
        for v in proms.acked:
            if v not in history:
                found.add(f"lost promotion: v{v} acknowledged, not in the history")
                found.lost += 1
        if len(production) > 1:
            found.add(f"{len(production)} production versions: {production}")
        if recover is None:
            found.add("the registry did not recover: no acknowledgement after the kill\n" + reg.log()[-1500:])
        if not reg.alive():
            found.add("the registry process exited")
        acked = regs.acked()
        unacked = [o for o in regs.ops if o.acked_version is None]
        for f in proms.failed:
            if "INTERNAL" in f or "UNKNOWN" in f:
                found.add(f"promotion {f}")
        for o in unacked:
            last = o.errors[-1] if o.errors else "no error (still in flight at the end)"
            if "INTERNAL" in last or "UNKNOWN" in last:
                found.add(f"request {o.request_id} ended with {last}")
        return Row(
            scenario=f"Postgres killed under load ({'external, pg_ctl -m immediate' if pg else 'embedded, SIGKILL'})",
            unit="registrations + promotions",
            attempted=len(regs.ops) + proms.attempted,
            acknowledged=len(acked) + len(proms.acked),
            lost=found.lost,
            duplicated=found.duplicated,
            agent_failures=None,
            recover_s=recover,
            violations=found.violations,
            notes=f"{clients} clients; {sum(o.attempts - 1 for o in regs.ops)} retries with the same request id; "
            f"{len(proms.failed)} promotions refused; {len(unacked)} registrations never acknowledged"
            + "".join(f" ({o.errors[-1][:160] if o.errors else 'in flight at the end'})" for o in unacked[:3]),
            size=f"{clients} clients, 2 KiB artifacts",
        )
    finally:
        reg.stop()
        if pg:
            pg.stop()
        else:
            reg.stop_postgres()
