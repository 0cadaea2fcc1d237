"""The blob-store interface.

Blobs are content-addressed: the key of a blob is `sha256/<hex>`. Bytes are first written
to a temporary location; `BlobUpload.commit(sha256)` makes them appear under the final key
ONLY AFTER the caller has verified the digest. A committed key is never overwritten with
different bytes, so identical uploads are stored once.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta

DEFAULT_CHUNK = 1024 * 1024


def blob_key(sha256: str) -> str:
    return f"sha256/{sha256}"


class BlobUpload(abc.ABC):
    """One upload in progress. Exactly one of commit() or abort() ends it."""

    @abc.abstractmethod
    async def write(self, chunk: bytes) -> None: ...

    @abc.abstractmethod
    async def commit(self, sha256: str) -> None:
        """Moves the bytes under `sha256/<hex>`. If that key already exists the temporary
        bytes are dropped (dedupe). Idempotent."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Removes everything the upload wrote. Safe to call more than once."""


class HashingUpload:
    """Wraps an upload, computing sha256 and size of what passes through."""

    def __init__(self, inner: BlobUpload):
        self.inner = inner
        self._hash = hashlib.sha256()
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)
        await self.inner.write(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class BlobStore(abc.ABC):
    """Where artifact bytes live. Every method is safe to call from the event loop: no
    implementation blocks it."""

    #: Human-readable location, for the start-up banner.
    description: str = ""

    @abc.abstractmethod
    async def start(self) -> None:
        """Prepares the store (creates the directory or bucket)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Releases resources."""

    @abc.abstractmethod
    async def begin_upload(self) -> BlobUpload: ...

    @abc.abstractmethod
    async def size(self, sha256: str) -> int | None:
        """The stored size, or None when the blob is missing."""

    @abc.abstractmethod
    def read(self, sha256: str, offset: int = 0, chunk_size: int = DEFAULT_CHUNK) -> AsyncIterator[bytes]:
        """Yields the blob's bytes from `offset`. Raises FileNotFoundError if missing."""

    @abc.abstractmethod
    async def delete(self, sha256: str) -> None:
        """Removes a blob; a missing one is not an error."""

    @abc.abstractmethod
    async def presign_get(self, sha256: str, expires: timedelta, filename: str) -> str:
        """A presigned HTTP GET URL. Raises FailedPrecondition where the store has none."""

    @abc.abstractmethod
    async def remove_stale_uploads(self, older_than: timedelta) -> int:
        """The janitor: removes temporary uploads older than `older_than`. Returns how many."""
