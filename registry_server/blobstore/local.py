"""Blobs in a local directory: `<root>/sha256/<hex>`, uploads in `<root>/tmp/`.

File I/O runs in worker threads so the event loop never waits on the disk. A commit is an
atomic rename, so a blob is either absent or complete under its final name.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from registry_server.blobstore.base import DEFAULT_CHUNK, BlobStore, BlobUpload
from registry_server.errors import FailedPrecondition


class _LocalUpload(BlobUpload):
    def __init__(self, store: LocalBlobStore, path: Path):
        self.store = store
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed in commit/abort

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._file.write, chunk)

    async def commit(self, sha256: str) -> None:
        final = self.store.path_for(sha256)

        def _commit() -> None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                self.path.unlink(missing_ok=True)
            else:
                os.replace(self.path, final)

        await asyncio.to_thread(_commit)

    async def abort(self) -> None:
        def _abort() -> None:
            if not self._file.closed:
                self._file.close()
            self.path.unlink(missing_ok=True)

        await asyncio.to_thread(_abort)


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.description = f"local directory {self.root}"

    def path_for(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    async def start(self) -> None:
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    async def begin_upload(self) -> BlobUpload:
        path = self.root / "tmp" / f"upload-{uuid.uuid4().hex}"
        return await asyncio.to_thread(_LocalUpload, self, path)

    async def size(self, sha256: str) -> int | None:
        try:
            return (await asyncio.to_thread(os.stat, self.path_for(sha256))).st_size
        except FileNotFoundError:
            return None

    async def read(self, sha256: str, offset: int = 0, chunk_size: int = DEFAULT_CHUNK) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, self.path_for(sha256), "rb")
        try:
            if offset:
                await asyncio.to_thread(f.seek, offset)
            while True:
                chunk = await asyncio.to_thread(f.read, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            f.close()

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
