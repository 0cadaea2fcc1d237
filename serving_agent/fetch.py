"""Getting a version's verified bytes into the cache: cache hit (verified again), presigned
URL when the registry offers one, else the registry's DownloadArtifact stream. Both resume
from a `.part` file after a cut. The sha256 is verified BEFORE anything is loaded; bytes
that do not match the registered digest are deleted and refused."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc

from modelreg.client import file_sha256
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg_runtime import tracing
from serving_agent.cache import BlobCache
from serving_agent.errors import FetchError, IntegrityError
from serving_agent.spec import VersionSpec

log = logging.getLogger("modelreg.agent.fetch")

STREAM_ATTEMPTS = 4
#: A presigned download reads the socket into this many buffers of this size.
URL_BUFFER = 2 * 1024 * 1024
URL_BUFFERS = 4


@dataclass
class Fetched:
    path: Path
    download_seconds: float  # 0 for a cache hit
    from_cache: bool


class Fetcher:
    def __init__(self, cache: BlobCache, channel: grpc.aio.Channel, actor: str = "serving-agent"):
        self.cache = cache
        self.stub = rs_grpc.RegistryServiceStub(channel)
        self.metadata = (("x-modelreg-actor", actor),)

    async def fetch(self, spec: VersionSpec) -> Fetched:
        note = ""
        cached = self.cache.get(spec.sha256)
        if cached is not None:
            with tracing.span("modelreg.verify", {"modelreg.cached": True}):
                digest = await asyncio.to_thread(file_sha256, cached)
            if digest == spec.sha256:
                return Fetched(cached, 0.0, True)
            self.cache.remove(spec.sha256)
            note = (
                f"the cached blob {cached.name} hashes to {digest}, not the registered sha256 {spec.sha256}; "
                "it was removed and refused"
            )
            log.warning("%s: %s", spec.name, note)
        started = time.monotonic()
        try:
            with tracing.span("modelreg.download", {"modelreg.bytes": spec.size_bytes}):
                path = await self._download(spec)
        except (FetchError, IntegrityError) as e:
            if note:
                raise type(e)(f"{note}; downloading it again failed: {e.message}") from None
            raise
        return Fetched(path, time.monotonic() - started, False)

    async def _download(self, spec: VersionSpec) -> Path:
        url = await self._presigned_url(spec)
        part = self.cache.part_for(spec.sha256)
        if url:
            log.info("%s: downloading from the store through a presigned URL", spec.name)
            digest = await asyncio.to_thread(self._download_url, url, part, spec.size_bytes)
        else:
            log.info("%s: downloading through the registry stream", spec.name)
            await self._download_stream(spec, part)
            with tracing.span("modelreg.verify"):
                digest = await asyncio.to_thread(file_sha256, part)
        if digest != spec.sha256:
            part.unlink(missing_ok=True)
            raise IntegrityError(
                f"downloaded bytes of {spec.name} hash to {digest} but the registry registered sha256 "
                f"{spec.sha256}; refused (not loaded)"
            )
        return self.cache.put(part, spec.sha256, spec.extension)

    async def _presigned_url(self, spec: VersionSpec) -> str:
        try:
            resp = await self.stub.GetArtifactUrl(
                rs.GetArtifactUrlRequest(name=spec.name, expires_in_seconds=900),
                metadata=tracing.inject(self.metadata),
                timeout=10,
            )
            return resp.url
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED):
                return ""  # the local store offers no URL: use the registry stream
            raise FetchError(f"cannot reach the registry for {spec.name}: {e.code().name}: {e.details()}") from None

    def _download_url(self, url: str, part: Path, size: int) -> str:
        """GETs the URL into `part` (resuming what it holds) and returns the sha256 of the
        whole file. The socket is read into a few reused buffers by this thread while a second
        thread hashes and writes each one, so the digest costs no second pass over the file
        and overlaps the transfer."""
        offset = part.stat().st_size if part.exists() else 0
        if offset >= size > 0:
            return file_sha256(part)
        req = urllib.request.Request(url)
        if offset:
            log.info("resuming the download at byte %d of %d", offset, size)
            req.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - the registry's URL
                resumed = bool(offset) and resp.status == 206
                digest = hashlib.sha256()
                if resumed:
                    with open(part, "rb") as f:
                        digest = hashlib.file_digest(f, "sha256")
                with open(part, "ab" if resumed else "wb") as f:
                    _pump(resp, f, digest)
                return digest.hexdigest()
        except (urllib.error.URLError, OSError) as e:
            raise FetchError(f"download from the presigned URL failed: {e}") from None

    async def _download_stream(self, spec: VersionSpec, part: Path) -> None:
        last: grpc.aio.AioRpcError | None = None
        for attempt in range(STREAM_ATTEMPTS):
            offset = part.stat().st_size if part.exists() else 0
            if spec.size_bytes and offset > spec.size_bytes:
                part.unlink()
                offset = 0
            if spec.size_bytes and offset == spec.size_bytes:
                return
            if offset:
                log.info("%s: resuming the download at byte %d of %d", spec.name, offset, spec.size_bytes)
            try:
                call = self.stub.DownloadArtifact(
                    rs.DownloadArtifactRequest(name=spec.name, offset=offset), metadata=tracing.inject(self.metadata)
                )
                with open(part, "ab" if offset else "wb") as f:
                    async for msg in call:
                        if msg.WhichOneof("payload") == "chunk":
                            f.write(msg.chunk)
                return
            except grpc.aio.AioRpcError as e:
                last = e
                if e.code() == grpc.StatusCode.DATA_LOSS:
                    part.unlink(missing_ok=True)
                    raise IntegrityError(f"the registry reported DATA_LOSS for {spec.name}: {e.details()}") from None
                if e.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.INTERNAL,
                    grpc.StatusCode.UNKNOWN,
                ):
                    raise FetchError(f"downloading {spec.name} failed: {e.code().name}: {e.details()}") from None
                await asyncio.sleep(0.2 * (attempt + 1))  # resume from the .part offset
        assert last is not None
        raise FetchError(f"downloading {spec.name} failed: {last.code().name}: {last.details()}")


def _pump(source, sink, digest, buffer_size: int = URL_BUFFER, buffers: int = URL_BUFFERS) -> None:
    """Copies `source.readinto` into `sink.write`, updating `digest`: this thread reads into
    `buffers` reused buffers while a helper thread hashes and writes them in order (hashlib
    and file writes drop the GIL), so reading overlaps hashing and writing."""
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(buffers):
        free.put(bytearray(buffer_size))
    full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
    failed: list[BaseException] = []

    def drain() -> None:
        while (item := full.get()) is not None:
            buf, n = item
            if not failed:
                try:
                    view = memoryview(buf)[:n]
                    digest.update(view)
                    sink.write(view)
                except BaseException as e:  # noqa: BLE001 - raised by the reading thread
                    failed.append(e)
            free.put(buf)

    helper = threading.Thread(target=drain, name="modelreg-fetch-hash", daemon=True)
    helper.start()
    try:
        while not failed:
            buf = free.get()
            n = source.readinto(buf)
            if not n:
                break
            full.put((buf, n))
    finally:
        full.put(None)
        helper.join()
    if failed:
        raise failed[0]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
