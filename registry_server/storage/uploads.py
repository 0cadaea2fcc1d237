"""Upload leases: which server process owns each upload in progress, and whether it lives.

Every server process registers one owner row at start (`register`) and renews its heartbeat
every third of the lease (`heartbeat`). Its id is in the name of every temporary upload it
writes; S3 multipart uploads staged under a final key, whose key names no owner, get a row of
their own (`multipart_started`). The janitor asks `judge` which owners are dead, removes their
uploads from the store, then `forget`s them.

An owner is DEAD when
- it ran on this machine (same boot id and pid namespace) and its process is gone (or the pid
  now belongs to a process started later): known at once, so a restarted server removes what
  its crashed predecessor left before the lease could expire; or
- its heartbeat is older than the lease, and the caller says the database has answered for a
  whole lease (`leases_comparable`): after an outage every live owner first gets the time to
  renew its heartbeat.
Otherwise it is alive, and its uploads are never touched. Times are the database's (`now()`),
so clocks of different machines do not matter.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

log = logging.getLogger(__name__)


def machine_id() -> str:
    """What processes that can see each other's pids share: the boot id and pid namespace on
    Linux; the host name and boot time elsewhere; '' when neither can be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        pass
    try:
        import psutil

        return f"{socket.gethostname()}/{psutil.boot_time():.0f}"
    except Exception:  # noqa: BLE001 - unknown: judged by the lease alone
        return ""


def process_started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), None if there is none (or only a
    zombie)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.Error:
        return None


@dataclass(frozen=True)
class Owner:
    id: str
    host: str
    pid: int
    machine: str
    process_started: float
    expired: bool  # heartbeat older than the lease


class UploadLeases:
    """This process's owner row, and the judging of everyone's."""

    def __init__(self, pool: asyncpg.Pool, lease: timedelta):
        self.pool = pool
        self.lease = lease
        self.owner = uuid.uuid4().hex
        self.machine = machine_id()
        self.pid = os.getpid()
        self.started = process_started(self.pid) or 0.0

    async def register(self) -> None:
        await self.pool.execute(
            "INSERT INTO upload_owners (id, host, pid, machine, process_started) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
            self.owner,
            socket.gethostname(),
            self.pid,
            self.machine,
            self.started,
        )

    async def heartbeat(self) -> None:
        """Renews this owner's lease (registers it again if a janitor forgot it)."""
        status = await self.pool.execute("UPDATE upload_owners SET heartbeat_at = now() WHERE id = $1", self.owner)
        if status.endswith(" 0"):
            log.warning("this server's upload lease had been given up by a janitor; taking it again")
            await self.register()

    async def release(self) -> None:
        """At a clean stop (every upload of ours has ended): removes our rows."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM upload_multiparts WHERE owner = $1", self.owner)
            await conn.execute("DELETE FROM upload_owners WHERE id = $1", self.owner)

    async def owners(self) -> list[Owner]:
        rows = await self.pool.fetch(
            "SELECT id, host, pid, machine, process_started, now() - heartbeat_at > $1 AS expired FROM upload_owners",
            self.lease,
        )
        return [Owner(r["id"], r["host"], r["pid"], r["machine"], r["process_started"], r["expired"]) for r in rows]

    def is_dead(self, o: Owner, leases_comparable: bool) -> bool:
        if o.id == self.owner:
            return False
        if self.machine and o.machine == self.machine:
            started = process_started(o.pid)
            return started is None or abs(started - o.process_started) > 1.0
        return o.expired and leases_comparable

    async def judge(self, leases_comparable: bool) -> tuple[set[str], set[str]]:
        """(every owner with a row, the dead among them)."""
        owners = await self.owners()
        return {o.id for o in owners}, {o.id for o in owners if self.is_dead(o, leases_comparable)}

    async def forget(self, dead: set[str]) -> None:
        """Drops the rows of owners whose uploads were removed."""
        if not dead:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM upload_multiparts WHERE owner = ANY($1::text[])", list(dead))
            await conn.execute("DELETE FROM upload_owners WHERE id = ANY($1::text[])", list(dead))

    # ------------------------------------------------------------ multipart uploads (S3)

    async def multipart_started(self, key: str, upload_id: str) -> None:
        await self.pool.execute(
            "INSERT INTO upload_multiparts (upload_id, owner, key) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            upload_id,
            self.owner,
            key,
        )

    async def multipart_ended(self, upload_id: str) -> None:
        await self.pool.execute("DELETE FROM upload_multiparts WHERE upload_id = $1", upload_id)

    async def multipart_owners(self) -> dict[str, str]:
        """upload id -> owner of every recorded multipart upload."""
        return {
            r["upload_id"]: r["owner"] for r in await self.pool.fetch("SELECT upload_id, owner FROM upload_multiparts")
        }
