"""grpc.health.v1 that tells the truth: NOT_SERVING while Postgres or the artifact store is
unreachable, SERVING again within one probe interval of their recovery.

A background prober checks both every `interval` seconds: Postgres with `SELECT 1` on a
connection of its own (so a saturated pool never reads as an outage), the artifact store
with `BlobStore.probe()` (the directory is there and writable; the bucket answers). An RPC
that hits a lost connection calls `suspect()`, which probes at once instead of at the next
tick.

Invariants:
- EVERY REGISTERED NAME ("" and each service) HAS THE SAME STATUS: every service needs the
  database, and the registry's uploads and downloads need the store.
- One log line when the registry becomes unhealthy (what is down, and why), one when it is
  healthy again (and after how long); nothing in between, never a traceback.
- `database_up_for()` says how long Postgres has answered without a break: the janitor judges
  other replicas' upload leases only once every live replica had time to renew its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import asyncpg
from grpc_health.v1 import health, health_pb2

from registry_server.blobstore.base import BlobStore
from registry_server.outage import is_backend_down, reason
from registry_server.storage import db

log = logging.getLogger("modelreg.health")

DATABASE = "database"
STORE = "artifact store"
#: google.rpc.ErrorInfo reasons of an UNAVAILABLE answer, by what is down.
REASONS = {DATABASE: "DATABASE_UNAVAILABLE", STORE: "ARTIFACT_STORE_UNAVAILABLE"}

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthMonitor:
    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        names: Sequence[str],
        database_url: str,
        blobs: BlobStore,
        interval: float = 1.0,
    ):
        self.servicer = servicer
        self.names = ("", *names)
        self.database_url = database_url
        self.blobs = blobs
        self.interval = interval
        # A probe that takes longer than this counts as a failure.
        self.timeout = max(1.0, 2 * interval)
        self.down: dict[str, str] = {}  # what is unreachable -> why, after the last probe
        self.serving: bool | None = None  # what the health service says; None before the first probe
        self._unhealthy_since: float | None = None
        self._database_up_since: float | None = None
        self._conn: asyncpg.Connection | None = None
        self._probe: asyncio.Task[dict[str, str]] | None = None
        self._wake = asyncio.Event()
        self.closed = False

    async def starting(self) -> None:
        """Every name NOT_SERVING until the first probe (a check while the server starts gets an
        answer, not NOT_FOUND)."""
        for name in self.names:
            await self.servicer.set(name, NOT_SERVING)

    # ------------------------------------------------------------------ probing

    async def _probe_database(self) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            self._conn = await asyncio.wait_for(db.connect(self.database_url), self.timeout)
        conn: asyncpg.Connection = self._conn
        try:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), self.timeout)
        except BaseException:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.terminate()
            raise

    async def _probe_store(self) -> None:
        await asyncio.wait_for(self.blobs.probe(), self.timeout)

    async def _run_probe(self) -> dict[str, str]:
        down: dict[str, str] = {}
        for what, probe in ((DATABASE, self._probe_database), (STORE, self._probe_store)):
            try:
                await probe()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a probe failing is its answer
                if not is_backend_down(exc) and not isinstance(exc, asyncpg.PostgresError | ValueError):
                    log.error("health probe of the %s failed (a bug in modelreg)", what, exc_info=exc)
                down[what] = reason(exc)
        await self._apply(down)
        return down

    async def check(self) -> dict[str, str]:
        """Probes now (or joins the probe under way) and returns what is down -> why. After
        `close()` it probes no more and returns the last answer."""
        if self.closed:
            return dict(self.down)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._run_probe())
        return dict(await asyncio.shield(self._probe))

    def suspect(self) -> None:
        """An RPC hit a lost connection: probe now rather than at the next tick."""
        self._wake.set()

    async def cause(self) -> str:
        """What a backend failure of an RPC most likely was: 'database', 'artifact store', or
        '' when both answer now (probes at once)."""
        down = await self.check()
        for what in (DATABASE, STORE):
            if what in down:
                return what
        return ""

    def database_up_for(self) -> float:
        """Seconds Postgres has answered every probe; 0 while it does not."""
        if self._database_up_since is None:
            return 0.0
        return time.monotonic() - self._database_up_since

    # ------------------------------------------------------------------ reporting

    async def _apply(self, down: dict[str, str]) -> None:
        now = time.monotonic()
        if DATABASE in down:
            self._database_up_since = None
        elif self._database_up_since is None:
            self._database_up_since = now
        self.down = down
        serving = not down
        if serving == self.serving or self.closed:
            return
        first = self.serving is None
        self.serving = serving
        for name in self.names:
            await self.servicer.set(name, SERVING if serving else NOT_SERVING)
        if not serving:
            self._unhealthy_since = now
            what = "; ".join(f"the {k} is unreachable ({v})" for k, v in down.items())
            log.warning("%s: grpc.health.v1 reports NOT_SERVING until it is back", what)
        elif not first and self._unhealthy_since is not None:
            log.info(
                "the database and the artifact store answer again after %.1fs: grpc.health.v1 reports SERVING",
                now - self._unhealthy_since,
            )

    async def run(self) -> None:
        """Until cancelled or closed: probes every `interval` s, or at once after `suspect()`.
        A probe under way when it is cancelled is cancelled with it (none outlives the loop)."""
        try:
            while not self.closed:
                self._wake.clear()
                await self.check()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
        finally:
            await self._cancel_probe()

    async def _cancel_probe(self) -> None:
        probe = self._probe
        if probe is not None and not probe.done():
            probe.cancel()
            with contextlib.suppress(BaseException):
                await probe

    async def close(self) -> None:
        """Reports NOT_SERVING from now on (the server is stopping) and closes the probe's connection."""
        self.closed = True
        self.serving = False
        for name in self.names:
            await self.servicer.set(name, NOT_SERVING)
        await self._cancel_probe()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
            if not conn.is_closed():
                conn.terminate()
