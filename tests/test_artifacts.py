"""The artifact store, against both real implementations: a local directory and S3 (a real
SeaweedFS on loopback). Content addressing, verification, streaming, resumable downloads,
presigned URLs, bundles, reference counting, the janitor, outages and bounded memory."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import grpc
import pytest
from conftest import BIN, free_port, run_cli
from onnx_helpers import onnx_bytes
from s3_helpers import SeaweedFS

from modelreg import Client, errors
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as res
from registry_server.blobstore.s3 import S3BlobStore

MiB = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Polls until `condition()` holds (for effects the server finishes after replying)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        time.sleep(0.1)


# ---------------------------------------------------------------------- the two stores


class LocalStore:
    kind = "local"

    def __init__(self, root: Path):
        self.root = root
        self.overrides = {"artifacts": str(root)}
        self.env = {"MODELREG_ARTIFACTS": str(root)}

    def _path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def final_blobs(self) -> list[str]:
        return sorted(p.name for p in (self.root / "sha256").rglob("*") if p.is_file())

    def temp_entries(self) -> list[str]:
        tmp = self.root / "tmp"
        return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []

    def overwrite(self, digest: str, data: bytes) -> None:
        self._path(digest).write_bytes(data)

    def remove(self, digest: str) -> None:
        self._path(digest).unlink()


class S3Store:
    kind = "s3"

    def __init__(self, server: SeaweedFS, bucket: str, prefix: str = "artifacts"):
        self.server = server
        self.bucket = bucket
        self.prefix = prefix
        self.overrides = server.registry_settings(bucket, prefix)
        self.env = server.registry_env(bucket, prefix)
        self.client = server.client()

    def _key(self, digest: str) -> str:
        return f"{self.prefix}/sha256/{digest}"

    def final_blobs(self) -> list[str]:
        if not self.client.bucket_exists(self.bucket):
            return []
        objs = self.client.list_objects(self.bucket, prefix=f"{self.prefix}/sha256/", recursive=True)
        return sorted(o.object_name.rsplit("/", 1)[-1] for o in objs)

    def temp_entries(self) -> list[str]:
        """Temporary objects under tmp/ and incomplete multipart uploads anywhere (an upload
        whose client declared the digest is staged under its final key until commit)."""
        if not self.client.bucket_exists(self.bucket):
            return []
        tmp = f"{self.prefix}/tmp/"
        objects = [o.object_name for o in self.client.list_objects(self.bucket, prefix=tmp, recursive=True)]
        uploads = self.client._list_multipart_uploads(self.bucket, prefix=f"{self.prefix}/").uploads
        return sorted(objects + [f"multipart:{u.object_name}" for u in uploads])

    def overwrite(self, digest: str, data: bytes) -> None:
        import io

        self.client.put_object(self.bucket, self._key(digest), io.BytesIO(data), len(data))

    def remove(self, digest: str) -> None:
        self.client.remove_object(self.bucket, self._key(digest))


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    server = request.getfixturevalue("seaweedfs")
    return S3Store(server, request.getfixturevalue("s3_bucket"))


@pytest.fixture
def reg(make_registry, store):
    return make_registry(**store.overrides)


@pytest.fixture
def sdk(reg):
    c = Client(reg.address, actor="tester")
    yield c
    c.close()


def header(model: str, **kw) -> rs.RegisterModelVersionRequest:
    return rs.RegisterModelVersionRequest(
        header=rs.RegisterModelVersionHeader(parent=f"models/{model}", create_model=True, **kw)
    )


def chunks_of(data: bytes, size: int = MiB):
    for i in range(0, len(data), size):
        yield rs.RegisterModelVersionRequest(chunk=data[i : i + size])


# ---------------------------------------------------------------------- verification and dedupe


def test_sha256_mismatch_is_rejected_with_nothing_stored(store, reg, sdk):
    sdk.create_model("mm")
    # 20 MiB is more than one S3 part, so the multipart path is aborted too.
    for data in (os.urandom(20 * MiB), b"small bytes"):
        with pytest.raises(errors.InvalidArgument, match="sha256 mismatch"):
            sdk.register("mm", data, sha256="0" * 64)
    assert list(sdk.list_versions("mm")) == []
    assert sdk.get_model("mm").latest_version == 0
    assert store.final_blobs() == []
    assert store.temp_entries() == []


def test_identical_uploads_are_stored_once(store, reg, sdk, tmp_path):
    big, small = os.urandom(20 * MiB), b"same small bytes"
    a = sdk.register("dedupe-a", big)
    b = sdk.register("dedupe-b", big)
    c = sdk.register("dedupe-a", small)
    d = sdk.register("dedupe-b", small)
    assert a.artifact.sha256 == b.artifact.sha256 == sha256(big)
    assert c.artifact.sha256 == d.artifact.sha256 == sha256(small)
    assert store.final_blobs() == sorted([sha256(big), sha256(small)])
    assert store.temp_entries() == []
    assert sdk.download("dedupe-b", 1, dest=tmp_path).read_bytes() == big


def test_upload_cancelled_by_the_client_leaves_no_version_and_no_object(store, reg, sdk):
    sdk.create_model("cut")
    halfway, release = threading.Event(), threading.Event()

    def requests():
        yield header("cut", filename="model.onnx")
        for i in range(40):
            if i == 24:  # stop mid-stream, with more than one S3 part sent
                halfway.set()
                release.wait(60)
                return
            yield rs.RegisterModelVersionRequest(chunk=os.urandom(MiB))

    call = sdk.stub.RegisterModelVersion.future(requests())
    try:
        assert halfway.wait(60)
        wait_until(lambda: store.temp_entries() != [], what="the upload to be in progress in the store")
        call.cancel()
    finally:
        release.set()
    with pytest.raises(grpc.FutureCancelledError):
        call.result()
    # The server aborts the upload when the call is cancelled.
    wait_until(lambda: store.temp_entries() == [], what="the temporary upload to be removed")
    assert list(sdk.list_versions("cut")) == []
    assert sdk.get_model("cut").latest_version == 0
    assert store.final_blobs() == []


def test_declared_digest_upload_shows_nothing_under_the_final_key_before_commit(store, reg, sdk):
    """The SDK declares the sha256, so the S3 store stages the parts under the final key; an
    S3 multipart upload is no object until completed, so nothing is readable there until the
    registry verified the digest, and a cut upload leaves nothing behind."""
    sdk.create_model("staged")
    data = os.urandom(40 * MiB)
    halfway, release = threading.Event(), threading.Event()

    def requests():
        yield header("staged", filename="model.onnx", sha256=sha256(data), size_bytes=len(data))
        for i, msg in enumerate(chunks_of(data)):
            if i == 24:  # more than one S3 part sent
                halfway.set()
                release.wait(60)
                return
            yield msg

    call = sdk.stub.RegisterModelVersion.future(requests())
    try:
        assert halfway.wait(60)
        wait_until(lambda: store.temp_entries() != [], what="the upload to be in progress in the store")
        assert store.final_blobs() == []
        assert reg.call(reg.running.blobs.size(sha256(data))) is None
        call.cancel()
    finally:
        release.set()
    with pytest.raises(grpc.FutureCancelledError):
        call.result()
    wait_until(lambda: store.temp_entries() == [], what=f"the staged upload to be aborted {store.temp_entries()}")
    assert store.final_blobs() == []
    assert sdk.register("staged", data).version == 1  # the same bytes, whole, then land
    assert store.final_blobs() == [sha256(data)] and store.temp_entries() == []


def test_janitor_removes_uploads_older_than_the_ttl(store, reg, make_registry):
    blobs = reg.running.blobs

    async def abandon_upload():
        # What a crashed server leaves behind: an upload never committed nor aborted.
        upload = await blobs.begin_upload()
        for _ in range(20):
            await upload.write(os.urandom(MiB))
        return upload

    upload = reg.call(abandon_upload())
    if store.kind == "s3":
        # A completed temporary object, as a crash between completing and copying leaves.
        import io

        store.client.put_object(store.bucket, f"{store.prefix}/tmp/leftover", io.BytesIO(b"x" * 100), 100)
    wait_until(lambda: store.temp_entries() != [], what="the abandoned upload to be visible")
    left = store.temp_entries()
    assert reg.call(blobs.remove_stale_uploads(timedelta(hours=1))) == 0
    assert store.temp_entries() == left
    time.sleep(1.1)  # S3 reports times in whole seconds
    # A server started with a tiny TTL sweeps them at start-up.
    make_registry(**store.overrides, upload_ttl=timedelta(seconds=1))
    wait_until(lambda: store.temp_entries() == [], what="the janitor to remove the abandoned uploads")
    assert store.final_blobs() == []
    reg.call(upload.abort())  # idempotent on what the janitor already removed


# ---------------------------------------------------------------------- downloads


def test_corrupted_or_missing_blob_is_data_loss(store, reg, sdk, tmp_path):
    data = os.urandom(3 * MiB)
    v = sdk.register("bad", data)
    corrupted = bytearray(data)
    corrupted[-10] ^= 0xFF
    store.overwrite(v.artifact.sha256, bytes(corrupted))
    with pytest.raises(errors.DataLoss, match="corrupted"):
        sdk.download("bad", 1, dest=tmp_path)
    assert list(tmp_path.glob("bad_v1*")) == []  # nothing kept, not even a .part
    with pytest.raises(grpc.RpcError) as e:
        list(sdk.stub.DownloadArtifact(rs.DownloadArtifactRequest(name="models/bad/versions/1", offset=MiB)))
    assert e.value.code() == grpc.StatusCode.DATA_LOSS
    store.overwrite(v.artifact.sha256, data[:-1])
    with pytest.raises(errors.DataLoss, match="corrupted"):
        sdk.download("bad", 1, dest=tmp_path)
    store.remove(v.artifact.sha256)
    with pytest.raises(errors.DataLoss, match="missing"):
        sdk.download("bad", 1, dest=tmp_path)
    assert list(tmp_path.glob("bad_v1*")) == []


def test_download_starts_at_any_offset_and_resumes(store, reg, sdk, tmp_path):
    data = os.urandom(5 * MiB + 17)
    sdk.register("off", data)
    for offset in (0, 1, MiB, 4 * MiB + 3, len(data) - 1, len(data)):
        msgs = list(sdk.stub.DownloadArtifact(rs.DownloadArtifactRequest(name="models/off/versions/1", offset=offset)))
        assert msgs[0].header.offset == offset
        assert msgs[0].header.sha256 == sha256(data)
        assert b"".join(m.chunk for m in msgs[1:]) == data[offset:]
    dest = tmp_path / "resume"
    dest.mkdir()
    (dest / "off_v1_model.bin.part").write_bytes(data[: 2 * MiB + 5])
    assert sdk.download("off", 1, dest=dest).read_bytes() == data


def test_deleting_never_removes_a_blob_another_version_references(store, reg, sdk, tmp_path):
    shared, only = os.urandom(MiB), os.urandom(MiB)
    sdk.register("a", shared)
    sdk.register("b", shared)
    sdk.register("b", only)
    assert store.final_blobs() == sorted([sha256(shared), sha256(only)])
    assert sdk.delete_model("a") == 1
    assert store.final_blobs() == sorted([sha256(shared), sha256(only)])
    assert sdk.download("b", 1, dest=tmp_path).read_bytes() == shared
    assert sdk.delete_version("b", 1) is True  # the last reference
    assert store.final_blobs() == [sha256(only)]
    assert sdk.delete_model("b") == 1
    assert store.final_blobs() == []


# ---------------------------------------------------------------------- presigned URLs


def test_presigned_url_serves_the_bytes_straight_from_s3(seaweedfs, s3_bucket, make_registry, tmp_path):
    store = S3Store(seaweedfs, s3_bucket)
    reg = make_registry(**store.overrides)
    data = onnx_bytes(6 * MiB + 1)
    with Client(reg.address) as sdk:
        sdk.create_model("psg", model_type="yolov8n")
        sdk.register("psg", data, filename="best.onnx")
        resp = sdk.artifact_url("psg", 1, expires_in=600)
    assert resp.sha256 == sha256(data) and resp.size_bytes == len(data)
    assert resp.model_version == "models/psg/versions/1"
    assert resp.filename == "psg_v1_yolov8n.onnx"
    url = urlparse(resp.url)
    assert url.netloc == seaweedfs.endpoint  # the registry is not in the data path
    # Plain HTTP, no credentials.
    with urllib.request.urlopen(resp.url, timeout=30) as r:
        assert r.read() == data
        assert 'filename="psg_v1_yolov8n.onnx"' in r.headers["Content-Disposition"]
    # The minio SDK reads the very object the URL names.
    bucket, key = unquote(url.path).lstrip("/").split("/", 1)
    assert (bucket, key) == (s3_bucket, f"artifacts/sha256/{sha256(data)}")
    obj = store.client.get_object(bucket, key)
    try:
        assert obj.read() == data
    finally:
        obj.close()
        obj.release_conn()
    # A tampered signature is refused.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(resp.url[:-4] + ("0000" if not resp.url.endswith("0000") else "1111"), timeout=30)
    assert e.value.code == 403
    # The CLI prints the URL alone, or the whole response with -o json.
    plain = run_cli("url", "psg", "1", "--expires", "120", address=reg.address).stdout.strip()
    with urllib.request.urlopen(plain, timeout=30) as r:
        assert hashlib.sha256(r.read()).hexdigest() == resp.sha256
    got = json.loads(run_cli("url", "psg", "1", "-o", "json", address=reg.address).stdout)
    assert got["sha256"] == resp.sha256 and got["sizeBytes"] == str(len(data))
    assert got["url"].startswith(f"http://{seaweedfs.endpoint}/") and got["expireTime"]
    # Ops get the same with grpcurl (server reflection).
    proc = subprocess.run(
        [
            str(BIN / "grpcurl"),
            "-plaintext",
            "-d",
            '{"name": "models/psg/versions/1", "expires_in_seconds": 300}',
            reg.address,
            "modelreg.v1.RegistryService/GetArtifactUrl",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    with urllib.request.urlopen(json.loads(proc.stdout)["url"], timeout=30) as r:
        assert r.read() == data


def test_agent_presigned_fetch_hashes_on_the_way_and_resumes(seaweedfs, s3_bucket, make_registry, tmp_path):
    """The agent's URL download returns the digest of the whole file it wrote, computed while
    the bytes arrive, fresh or resumed from a `.part` (a Range request)."""
    from serving_agent.fetch import Fetcher

    reg = make_registry(**S3Store(seaweedfs, s3_bucket).overrides)
    data = os.urandom(5 * MiB + 3)
    with Client(reg.address) as sdk:
        sdk.register("fetch", data)
        url = sdk.artifact_url("fetch", 1).url
    part = tmp_path / "blob.part"
    for kept in (0, 1, 2 * MiB + 1, len(data)):
        part.write_bytes(data[:kept])
        assert Fetcher._download_url(None, url, part, len(data)) == sha256(data), kept
        assert part.read_bytes() == data


def test_presigned_url_expires(seaweedfs, s3_bucket, make_registry):
    reg = make_registry(**seaweedfs.registry_settings(s3_bucket))
    with Client(reg.address) as sdk:
        sdk.register("exp", b"short-lived")
        url = sdk.artifact_url("exp", 1, expires_in=1).url
        with pytest.raises(errors.InvalidArgument, match="expires_in_seconds"):
            sdk.artifact_url("exp", 1, expires_in=8 * 24 * 3600)
    time.sleep(2.5)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=30)
    assert e.value.code == 403


def test_local_store_has_no_presigned_urls(make_registry, tmp_path):
    reg = make_registry()
    with Client(reg.address) as sdk:
        sdk.register("loc", b"bytes")
        with pytest.raises(errors.FailedPrecondition, match="local directory.*s3://"):
            sdk.artifact_url("loc", 1)
    r = run_cli("url", "loc", "1", address=reg.address, check=False)
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr and "modelreg download" in r.stderr
    r = run_cli("url", "loc", "1", "--expires", "0", address=reg.address, check=False)
    assert r.returncode == 2 and "--expires must be" in r.stderr


# ---------------------------------------------------------------------- bundles


def _tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), bool(p.stat().st_mode & stat.S_IXUSR))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_directory_bundle_round_trip_via_the_cli(store, reg, tmp_path):
    export = tmp_path / "hf-export"
    (export / "tokenizer").mkdir(parents=True)
    (export / "weights").mkdir()
    (export / "config.json").write_text('{"hidden_size": 64}')
    (export / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    (export / "weights" / "model.safetensors").write_bytes(os.urandom(2 * MiB))
    (export / "weights" / "EMPTY").write_bytes(b"")
    (export / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (export / "run.sh").chmod(0o755)

    first = json.loads(run_cli("register", "bert", str(export), "-o", "json", address=reg.address).stdout)
    for p in export.rglob("*"):  # new times, same files: same archive
        os.utime(p, (time.time() + 3600, time.time() + 3600))
    second = json.loads(run_cli("register", "bert", str(export), "-o", "json", address=reg.address).stdout)
    assert first["modelVersion"]["artifact"]["sha256"] == second["modelVersion"]["artifact"]["sha256"]
    assert first["modelVersion"]["format"] == "ARTIFACT_FORMAT_BUNDLE"
    assert int(second["modelVersion"]["version"]) == 2
    assert len(store.final_blobs()) == 1

    restored = tmp_path / "restored"
    got = json.loads(
        run_cli("download", "bert", "2", "--dest", str(restored), "--extract", "-o", "json", address=reg.address).stdout
    )
    assert got["verified"] is True and got["sha256"] == first["modelVersion"]["artifact"]["sha256"]
    assert _tree(restored) == _tree(export)
    assert not list(restored.glob("*.tar*"))  # the archive itself is not left behind


def test_extract_refuses_an_artifact_that_is_not_a_bundle(registry, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(onnx_bytes(64))
    run_cli("register", "single", str(model), address=registry.address)
    dest = tmp_path / "out"
    r = run_cli("download", "single", "1", "--dest", str(dest), "--extract", address=registry.address, check=False)
    assert r.returncode == 2
    assert "not a directory bundle" in r.stderr and "drop --extract" in r.stderr
    assert not dest.exists() or not list(dest.iterdir())


# ---------------------------------------------------------------------- S3 itself


async def test_s3_store_copies_in_parts_and_reads_ranged_windows(seaweedfs, s3_bucket):
    """Thresholds shrunk so a 13 MiB blob takes the > 5 GiB paths: multipart copy on commit
    and several ranged GETs on read."""
    store = S3BlobStore(
        endpoint=seaweedfs.endpoint,
        bucket=s3_bucket,
        prefix="p",
        access_key=seaweedfs.access_key,
        secret_key=seaweedfs.secret_key,
        secure=False,
        part_size=5 * MiB,
        copy_threshold=6 * MiB,
        copy_part_size=5 * MiB,
        read_window=MiB + 7,
    )
    await store.start()
    try:
        data = os.urandom(13 * MiB + 5)
        upload = await store.begin_upload()
        for i in range(0, len(data), 300_000):
            await upload.write(data[i : i + 300_000])
        await upload.commit(sha256(data))
        assert await store.size(sha256(data)) == len(data)
        for offset in (0, 5, MiB + 7, 3 * (MiB + 7) + 1, len(data) - 1, len(data)):
            got = b"".join([c async for c in store.read(sha256(data), offset, 256 * 1024)])
            assert got == data[offset:], offset
        names = [o.object_name for o in seaweedfs.client().list_objects(s3_bucket, prefix="p/", recursive=True)]
        assert names == [f"p/sha256/{sha256(data)}"]
        await store.delete(sha256(data))
        assert await store.size(sha256(data)) is None
        with pytest.raises(FileNotFoundError):
            [c async for c in store.read(sha256(data))]
    finally:
        await store.close()


def test_s3_outage_during_upload_is_unavailable_and_a_retry_makes_one_version(
    own_seaweedfs, s3_bucket, make_registry, tmp_path
):
    s3 = own_seaweedfs
    store = S3Store(s3, s3_bucket)
    reg = make_registry(**store.overrides)
    sdk = Client(reg.address)
    kept = sdk.register("kept", b"registered before the outage")
    data = onnx_bytes(48 * MiB)

    def requests(stop_store_after: int | None = None):
        yield header("outage", request_id="train-7", sha256=sha256(data), size_bytes=len(data), filename="m.onnx")
        for i, msg in enumerate(chunks_of(data)):
            if i == stop_store_after:
                s3.stop()
            yield msg

    with pytest.raises(grpc.RpcError) as e:
        sdk.stub.RegisterModelVersion(requests(stop_store_after=24), timeout=120)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "artifact store" in e.value.details() and "retry" in e.value.details()
    # Downloads say the same while the store is down; nothing is served.
    with pytest.raises(errors.Unavailable, match="artifact store"):
        sdk.download("kept", 1, dest=tmp_path)
    assert not (tmp_path / "kept_v1_model.bin").exists()  # at most a .part to resume from
    assert list(sdk.list_versions("outage")) == []

    s3.start()
    assert store.final_blobs() == [kept.artifact.sha256]  # nothing under a final key
    first = sdk.stub.RegisterModelVersion(requests(), timeout=120)
    again = sdk.stub.RegisterModelVersion(requests(), timeout=120)
    assert not first.deduplicated and again.deduplicated
    assert first.model_version.state == res.MODEL_VERSION_STATE_READY
    assert again.model_version == first.model_version
    assert [v.version for v in sdk.list_versions("outage")] == [1]
    assert sdk.download("outage", 1, dest=tmp_path).read_bytes() == data
    assert store.final_blobs() == sorted([kept.artifact.sha256, sha256(data)])
    # What the aborted upload could not remove while the store was down, the janitor does.
    time.sleep(1.1)
    reg.call(reg.running.blobs.remove_stale_uploads(timedelta(0)))
    assert store.temp_entries() == []
    sdk.close()


def test_a_store_that_refuses_requests_gives_unavailable_not_internal(seaweedfs, s3_bucket, make_registry, tmp_path):
    store = S3Store(seaweedfs, s3_bucket)
    reg = make_registry(**store.overrides)
    with Client(reg.address) as sdk:
        sdk.register("gone", b"before the bucket vanished")
        for o in store.client.list_objects(s3_bucket, recursive=True):
            store.client.remove_object(s3_bucket, o.object_name)
        store.client.remove_bucket(s3_bucket)
        with pytest.raises(errors.Unavailable, match="refused .*NoSuchBucket"):
            sdk.register("gone", os.urandom(20 * MiB))
        with pytest.raises(errors.Unavailable, match="NoSuchBucket"):
            sdk.download("gone", 1, dest=tmp_path)
        assert [v.version for v in sdk.list_versions("gone")] == [1]


def _start_server(database_url: str, tmp_path: Path, **env_overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        MODELREG_ADDRESS=f"127.0.0.1:{free_port()}",
        MODELREG_DATABASE_URL=database_url,
        MODELREG_DATA_DIR=str(tmp_path / "data"),
        **env_overrides,
    )
    return subprocess.run([str(BIN / "modelreg"), "server"], env=env, capture_output=True, text=True, timeout=90)


def test_server_with_wrong_s3_credentials_exits_with_a_clear_message(seaweedfs, s3_bucket, database_url, tmp_path):
    env = seaweedfs.registry_env(s3_bucket)
    env["MODELREG_S3_SECRET_KEY"] = "not-the-secret"
    proc = _start_server(database_url, tmp_path, **env)
    assert proc.returncode == 1
    assert "cannot start with the artifact store" in proc.stderr and "SignatureDoesNotMatch" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("modelreg server: cannot start with the artifact store")
    assert "Traceback" not in proc.stderr
    assert "not-the-secret" not in proc.stderr and seaweedfs.secret_key not in proc.stderr


def test_server_exits_with_a_clear_message_when_s3_is_unreachable(database_url, tmp_path):
    env = dict(os.environ)
    env.update(
        MODELREG_ADDRESS=f"127.0.0.1:{free_port()}",
        MODELREG_DATABASE_URL=database_url,
        MODELREG_DATA_DIR=str(tmp_path / "data"),
        MODELREG_ARTIFACTS="s3://models/prod",
        MODELREG_S3_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        MODELREG_S3_ACCESS_KEY="k",
        MODELREG_S3_SECRET_KEY="s",
    )
    proc = subprocess.run([str(BIN / "modelreg"), "server"], env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 1
    assert "artifact store" in proc.stderr and "unreachable" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("modelreg server: cannot start with the artifact store")
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------- memory


@pytest.mark.slow
def test_large_artifact_streams_through_a_server_process_in_bounded_memory(store, spawn_registry, tmp_path):
    import psutil

    proc, address = spawn_registry(**store.env)
    server = psutil.Process(proc.pid)
    size = 320 * MiB
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    with Client(address, timeout=None) as sdk:
        # Warm up first (imports, pools), so the baseline is the steady state.
        sdk.register("warm", os.urandom(20 * MiB))
        sdk.download("warm", 1, dest=tmp_path / "warm")
        baseline = server.memory_info().rss
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, server.memory_info().rss)
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            v = sdk.register("big", src)
            path = sdk.download("big", v.version, dest=tmp_path / "out")
        finally:
            done.set()
            sampler.join(5)
    assert v.artifact.size_bytes == size
    assert path.stat().st_size == size  # and the SDK verified its sha256
    growth = (peak - baseline) / MiB
    assert growth < 200, f"the server's RSS grew by {growth:.0f} MiB moving a {size // MiB} MiB artifact"
    if store.kind == "s3":
        assert store.final_blobs() == sorted([v.artifact.sha256, sdk_sha(tmp_path / "warm")])


def sdk_sha(directory: Path) -> str:
    (only,) = list(directory.iterdir())
    return sha256(only.read_bytes())
