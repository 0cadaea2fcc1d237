"""A crashed server's temporary uploads are removed at the next start (or janitor pass), not
after the 24 h TTL, and a live replica's upload in progress never is."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from agent_helpers import wait_until
from test_artifacts import S3Store

from modelreg import Client
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res
from registry_server.storage import db
from registry_server.storage.uploads import UploadLeases

pytestmark = pytest.mark.timeout(180)

MiB = 1024 * 1024


class StalledUpload:
    """A RegisterModelVersion call that sends `before` MiB and waits for `resume()`."""

    def __init__(self, address: str, model: str, data: bytes, before: int, declare: bool = True):
        self.halfway = threading.Event()
        self.release = threading.Event()
        self.channel = grpc.insecure_channel(address)
        stub = rs_grpc.RegistryServiceStub(self.channel)
        digest = {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)} if declare else {}

        def requests():
            yield rs.RegisterModelVersionRequest(
                header=rs.RegisterModelVersionHeader(
                    parent=f"models/{model}", create_model=True, filename="model.bin", **digest
                )
            )
            for i in range(0, len(data), MiB):
                if i == before * MiB:
                    self.halfway.set()
                    self.release.wait(120)
                yield rs.RegisterModelVersionRequest(chunk=data[i : i + MiB])

        self.call = stub.RegisterModelVersion.future(requests(), timeout=150)
        assert self.halfway.wait(60)

    def resume(self) -> rs.RegisterModelVersionResponse:
        self.release.set()
        try:
            return self.call.result(60)
        finally:
            self.channel.close()

    def abandon(self) -> None:
        self.release.set()
        self.call.cancel()
        self.channel.close()


def temp_uploads(artifacts: Path) -> list[str]:
    tmp = artifacts / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def test_a_crashed_servers_temp_upload_goes_at_the_next_start_and_a_live_replicas_stays(spawn_registry, tmp_path):
    artifacts = tmp_path / "artifacts"  # spawn_registry's MODELREG_ARTIFACTS: one store for all
    crashing, crashing_address = spawn_registry()
    _, live_address = spawn_registry(MODELREG_JANITOR_INTERVAL="0.2")
    lost = StalledUpload(crashing_address, "big", os.urandom(8 * MiB), before=4)
    wait_until(lambda: len(temp_uploads(artifacts)) == 1, what="the first upload to be in progress")
    crashed = temp_uploads(artifacts)
    data = os.urandom(6 * MiB)
    live = StalledUpload(live_address, "live", data, before=3)
    wait_until(lambda: len(temp_uploads(artifacts)) == 2, what="the second upload to be in progress")
    in_progress = sorted(set(temp_uploads(artifacts)) - set(crashed))

    crashing.send_signal(signal.SIGKILL)
    crashing.wait(10)
    lost.abandon()
    # A restarted server removes what the crashed one left at its first janitor pass (the TTL
    # is still 24 h); the live replica's upload, passed over by two janitors, stays.
    _, address = spawn_registry(MODELREG_JANITOR_INTERVAL="0.2")
    wait_until(lambda: temp_uploads(artifacts) == in_progress, timeout=15, what="the orphaned upload to be removed")
    time.sleep(1.0)  # several more passes of both janitors
    assert temp_uploads(artifacts) == in_progress
    done = live.resume()
    assert done.model_version.state == res.MODEL_VERSION_STATE_READY
    assert done.model_version.artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert temp_uploads(artifacts) == []
    with Client(address) as c:
        assert list(c.list_versions("big")) == []  # the crashed call left no version


def test_a_lease_expires_only_for_owners_elsewhere_and_only_once_the_database_was_up_a_whole_lease(
    database_url,
):
    async def run() -> None:
        pool = await db.open_database(database_url, 2)
        try:
            me = UploadLeases(pool, timedelta(seconds=1))
            await me.register()
            now = "now()"
            await pool.execute(
                "INSERT INTO upload_owners (id, host, pid, machine, process_started, heartbeat_at) VALUES"
                f" ('fresh', 'elsewhere', 1, 'other-machine', 0, {now}),"
                f" ('stale', 'elsewhere', 1, 'other-machine', 0, {now} - interval '1 hour'),"
                # On this machine: a pid that is not running, and this very process (a live one).
                f" ('crashed', 'here', 999999, $1, 0, {now}),"
                f" ('alive', 'here', $2, $1, $3, {now} - interval '1 hour')",
                me.machine,
                os.getpid(),
                me.started,
            )
            known, dead = await me.judge(leases_comparable=False)
            assert known == {me.owner, "fresh", "stale", "crashed", "alive"}
            assert dead == {"crashed"}  # a lease is not judged right after an outage
            known, dead = await me.judge(leases_comparable=True)
            assert dead == {"crashed", "stale"}
            await me.forget(dead)
            assert {r["id"] for r in await pool.fetch("SELECT id FROM upload_owners")} == {me.owner, "fresh", "alive"}
        finally:
            await pool.close()

    asyncio.run(run())


def test_a_crashed_servers_s3_multipart_upload_is_aborted_at_the_next_start(
    spawn_registry, seaweedfs, s3_bucket, tmp_path
):
    store = S3Store(seaweedfs, s3_bucket)
    proc, address = spawn_registry(**store.env)
    # 20 MiB with the digest declared: a multipart upload staged under the final key.
    upload = StalledUpload(address, "s3big", os.urandom(20 * MiB), before=18)
    wait_until(lambda: store.temp_entries() != [], what="the multipart upload to be in progress")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    upload.abandon()
    assert [e for e in store.temp_entries() if e.startswith("multipart:")]

    spawn_registry(**store.env)
    wait_until(lambda: store.temp_entries() == [], timeout=15, what="the orphaned multipart upload to be aborted")
    assert store.final_blobs() == []
