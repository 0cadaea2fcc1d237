"""Blobs in a local directory: `<root>/sha256/<hex>`, uploads in `<root>/tmp/`, named
`upload-<owner>-<uuid>` (`upload-<uuid>` without an owner).

File I/O runs in worker threads so the event loop never waits on the disk. A commit is an
atomic rename, so a blob is either absent or complete under its final name. A read takes
one thread hop per `READ_BATCH` bytes, in which it also calls the caller's `observe`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from registry_server.blobstore.base import DEFAULT_CHUNK, BlobStore, BlobUpload, Observer, Orphans
from registry_server.errors import FailedPrecondition

#: Bytes one worker-thread call reads (in chunks of the caller's size) before handing them
#: over. Not more: several fresh 1 MiB buffers alive at once make glibc trim and re-fault its
#: heap (~230 page faults per MiB measured), which costs more than the thread hops saved.
READ_BATCH = 1024 * 1024


class _LocalUpload(BlobUpload):
    """The temporary file is created by the first write, in its worker thread; every file
    operation holds `_lock`, so an abort that runs while a cancelled write is still in its
    thread waits for it and leaves no file behind."""

    def __init__(self, store: LocalBlobStore, path: Path):
        self.store = store
        self.path = path
        self._file: BinaryIO | None = None
        self._ended = False
        self._committed = False
        self._lock = threading.Lock()

    async def write(self, chunk: bytes) -> None:
        def _write() -> None:
            with self._lock:
                if self._ended:
                    raise RuntimeError("write after commit/abort")
                if self._file is None:
                    self._file = open(self.path, "wb")  # noqa: SIM115 - closed in commit/abort
                self._file.write(chunk)

        await asyncio.to_thread(_write)

    async def commit(self, sha256: str) -> None:
        final = self.store.path_for(sha256)

        def _commit() -> None:
            with self._lock:
                if self._committed:
                    return
                if self._ended:
                    raise RuntimeError("commit after abort")
                if self._file is None:
                    self._file = open(self.path, "wb")  # noqa: SIM115 - an empty blob
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._ended = self._committed = True
                final.parent.mkdir(parents=True, exist_ok=True)
                if final.exists():
                    self.path.unlink(missing_ok=True)
                else:
                    os.replace(self.path, final)

        await asyncio.to_thread(_commit)

    async def abort(self) -> None:
        def _abort() -> None:
            with self._lock:
                self._ended = True
                if self._file is not None and not self._file.closed:
                    self._file.close()
                self.path.unlink(missing_ok=True)

        # Shielded: a caller cancelled while aborting (a cut RPC is cancelled again right after
        # the error that made it abort) must not cancel the removal before its thread starts.
        await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, _abort))


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.description = f"local directory {self.root}"

    def path_for(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    async def start(self) -> None:
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    async def probe(self) -> None:
        def check() -> None:
            for folder in (self.root / "sha256", self.root / "tmp"):
                if not folder.is_dir():
                    raise FileNotFoundError(f"{folder} is missing")
                if not os.access(folder, os.W_OK | os.X_OK):
                    raise PermissionError(f"{folder} is not writable")

        await asyncio.to_thread(check)

    async def begin_upload(self, expected_sha256: str = "") -> BlobUpload:
        owner = f"{self.owner.owner}-" if self.owner is not None else ""
        return _LocalUpload(self, self.root / "tmp" / f"upload-{owner}{uuid.uuid4().hex}")

    async def size(self, sha256: str) -> int | None:
        try:
            return (await asyncio.to_thread(os.stat, self.path_for(sha256))).st_size
        except FileNotFoundError:
            return None

    async def read(
        self, sha256: str, offset: int = 0, chunk_size: int = DEFAULT_CHUNK, observe: Observer | None = None
    ) -> AsyncIterator[bytes]:
        per_call = max(1, READ_BATCH // chunk_size)
        # The file is closed under this lock, so a read still running in its worker thread
        # after the download was cancelled never reads from a reused descriptor.
        lock = threading.Lock()

        def read_batch(f) -> list[bytes]:
            chunks: list[bytes] = []
            with lock:
                if f.closed:
                    return chunks
                for _ in range(per_call):
                    chunk = f.read(chunk_size)
                    if not chunk:
                        break
                    if observe is not None:
                        observe(chunk)
                    chunks.append(chunk)
            return chunks

        def close(f) -> None:
            with lock:
                f.close()

        def open_at() -> object:
            f = open(self.path_for(sha256), "rb")  # noqa: SIM115 - closed below
            if offset:
                f.seek(offset)
            return f

        f = await asyncio.to_thread(open_at)
        try:
            while True:
                chunks = await asyncio.to_thread(read_batch, f)
                for chunk in chunks:
                    yield chunk
                if len(chunks) < per_call:
                    return
        finally:
            # Not awaited: this also runs when the generator is closed from a finalizer.
            asyncio.get_running_loop().run_in_executor(None, close, f)

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self.path_for(sha256).unlink, True)

    async def presign_get(self, sha256: str, expires: timedelta, filename: str) -> str:
        raise FailedPrecondition(
            "the registry stores artifacts in a local directory, which has no presigned URLs; "
            "download through the registry instead (DownloadArtifact, 'modelreg download'), "
            "or run the registry with MODELREG_ARTIFACTS=s3://bucket/prefix"
        )

    async def remove_stale_uploads(self, older_than: timedelta) -> int:
        def _sweep() -> int:
            cutoff = time.time() - older_than.total_seconds()
            removed = 0
            for p in (self.root / "tmp").glob("upload-*"):
                try:
                    if p.stat().st_mtime < cutoff:
                        p.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
            return removed

        return await asyncio.to_thread(_sweep)

    async def remove_orphaned_uploads(self, orphans: Orphans) -> int:
        def _sweep() -> int:
            now = time.time()
            removed = 0
            for p in (self.root / "tmp").glob("upload-*-*"):
                owner = p.name.split("-")[1]
                try:
                    if orphans.removable(owner, timedelta(seconds=now - p.stat().st_mtime)):
                        p.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
            return removed

        return await asyncio.to_thread(_sweep)
