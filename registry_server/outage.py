"""One line when a backend goes, one when it comes back: how every background loop reports
an unreachable database or artifact store.

    outage = Outage("canary judge", log)
    while True:
        try:
            await one_pass()
            outage.ok()
        except Exception as exc:
            outage.failed(exc)      # re-raises nothing; a bug is logged with its traceback
        await asyncio.sleep(interval)

Invariants:
- A BACKEND FAILURE NEVER LOGS A TRACEBACK. The first failure of a run of failures logs one
  WARNING line naming the task and the reason; the first success after it logs one INFO line
  with how long it lasted. Repeats in between log nothing.
- Anything else (not a lost connection, a timeout or an `Unavailable`) is a bug: it is logged
  with its traceback, every time, and the loop goes on.
"""

from __future__ import annotations

import logging
import time

from registry_server.errors import Unavailable
from registry_server.storage.db import BACKEND_DOWN


def is_backend_down(exc: BaseException) -> bool:
    """Whether `exc` means the database or the artifact store is unreachable (retry later),
    not a bug."""
    return isinstance(exc, (*BACKEND_DOWN, Unavailable))


def reason(exc: BaseException) -> str:
    """One line: the exception's type and the first line of its text (at most 200 characters)."""
    text = exc.message if isinstance(exc, Unavailable) else str(exc)
    lines = text.strip().splitlines()
    first = lines[0][:200] if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class Outage:
    """The up/down state of one background task's backend, logged on each change."""

    def __init__(self, task: str, logger: logging.Logger):
        self.task = task
        self.log = logger
        self.down_since: float | None = None  # time.monotonic() of the first failure

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        """Records a failed pass: one line if it starts an outage, a traceback if it is a bug."""
        if not is_backend_down(exc):
            self.log.error("%s failed (a bug in modelreg); continuing", self.task, exc_info=exc)
            return
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.log.warning("%s: backend unavailable (%s); retrying until it is back", self.task, reason(exc))

    def ok(self) -> None:
        """Records a successful pass: one line if it ends an outage."""
        if self.down_since is not None:
            lasted = time.monotonic() - self.down_since
            self.down_since = None
            self.log.info("%s: backend available again after %.1fs", self.task, lasted)


class QuietLibraryOutages(logging.Filter):
    """Drops a library's log records that carry a backend-down exception (asyncpg's pool logs a
    traceback each time it fails to reopen its minimum connections). The registry's health
    monitor reports the outage itself, in one line when it starts and one when it ends."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not is_backend_down(exc)


_QUIET = QuietLibraryOutages()


def quiet_library_outages(*loggers: str) -> None:
    """Installs the filter on each named logger (once)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)
