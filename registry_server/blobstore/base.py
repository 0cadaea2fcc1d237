"""The blob-store interface.

Blobs are content-addressed: the key of a blob is `sha256/<hex>`. Bytes are first staged
where no reader can see them (a temporary file or object, or an S3 multipart upload, which is
no object until completed); `BlobUpload.commit(sha256)` makes them appear under the final key
ONLY AFTER the caller has verified the digest. A committed key is never overwritten with
different bytes, so identical uploads are stored once.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

DEFAULT_CHUNK = 1024 * 1024

#: Called with every chunk a read produces, IN THE WORKER THREAD THAT READ IT, before the chunk
#: is yielded: a download hashes on the way without an extra thread hop or the event loop.
Observer = Callable[[bytes], None]


def blob_key(sha256: str) -> str:
    return f"sha256/{sha256}"


class UploadOwner(Protocol):
    """This server process as the owner of its uploads (`registry_server.storage.uploads`):
    its id goes into every temporary upload's name, and S3 multipart uploads staged under a
    final key are recorded with it."""

    owner: str

    async def multipart_started(self, key: str, upload_id: str) -> None: ...

    async def multipart_ended(self, upload_id: str) -> None: ...


@dataclass(frozen=True)
class Orphans:
    """What the janitor knows about owners, for `BlobStore.remove_orphaned_uploads`."""

    dead: set[str]  # owners judged dead: their uploads go
    known: set[str]  # every owner with a row (alive or dead)
    #: An upload named for an owner without a row (a new replica between its row and the
    #: janitor's read, or one forgotten half-way) goes only once older than this.
    grace: timedelta
    multipart_owners: dict[str, str] = field(default_factory=dict)  # upload id -> owner

    def removable(self, owner: str, age: timedelta) -> bool:
        return owner in self.dead or (owner not in self.known and age > self.grace)


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
    """Wraps an upload, computing sha256 and size of what passes through. Large chunks are
    hashed in a worker thread (hashlib drops the GIL), each while the next chunk arrives:
    the event loop only moves bytes. Call `finish()` after the last write, before reading
    `sha256`."""

    #: Chunks below this are hashed inline (a thread hop would cost more than the hash).
    INLINE = 64 * 1024

    def __init__(self, inner: BlobUpload):
        self.inner = inner
        self._hash = hashlib.sha256()
        self._hashing: asyncio.Future | None = None
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        await self.finish()  # one hash at a time, in order
        if len(chunk) < self.INLINE:
            self._hash.update(chunk)
        else:
            self._hashing = asyncio.get_running_loop().run_in_executor(None, self._hash.update, chunk)
        await self.inner.write(chunk)

    async def finish(self) -> None:
        """Waits until every byte written so far is hashed."""
        if self._hashing is not None:
            hashing, self._hashing = self._hashing, None
            await hashing

    @property
    def sha256(self) -> str:
        if self._hashing is not None:
            raise RuntimeError("HashingUpload.sha256 read before finish()")
        return self._hash.hexdigest()


class BlobStore(abc.ABC):
    """Where artifact bytes live. Every method is safe to call from the event loop: no
    implementation blocks it."""

    #: Human-readable location, for the start-up banner.
    description: str = ""
    #: Who owns the uploads this store begins; None names them by a random id alone.
    owner: UploadOwner | None = None

    @abc.abstractmethod
    async def start(self) -> None:
        """Prepares the store (creates the directory or bucket)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Releases resources."""

    @abc.abstractmethod
    async def probe(self) -> None:
        """Raises (OSError, or Unavailable) when the store cannot take uploads or serve reads
        now; the health monitor calls it every second, so it is one cheap request."""

    @abc.abstractmethod
    async def begin_upload(self, expected_sha256: str = "") -> BlobUpload:
        """Starts an upload. `expected_sha256` is the digest the client declared, if any: a
        store may stage the bytes where that digest's blob will live (never visible there
        before commit), and commit() is then only ever called with that digest."""

    @abc.abstractmethod
    async def size(self, sha256: str) -> int | None:
        """The stored size, or None when the blob is missing."""

    @abc.abstractmethod
    def read(
        self, sha256: str, offset: int = 0, chunk_size: int = DEFAULT_CHUNK, observe: Observer | None = None
    ) -> AsyncIterator[bytes]:
        """Yields the blob's bytes from `offset` in chunks of at most `chunk_size`, calling
        `observe` (if given) with each chunk in the worker thread that read it. Raises
        FileNotFoundError if missing."""

    @abc.abstractmethod
    async def delete(self, sha256: str) -> None:
        """Removes a blob; a missing one is not an error."""

    @abc.abstractmethod
    async def presign_get(self, sha256: str, expires: timedelta, filename: str) -> str:
        """A presigned HTTP GET URL. Raises FailedPrecondition where the store has none."""

    @abc.abstractmethod
    async def remove_stale_uploads(self, older_than: timedelta) -> int:
        """The janitor: removes temporary uploads older than `older_than`, whoever owns them
        (the upload TTL caps how long one may take). Returns how many."""

    @abc.abstractmethod
    async def remove_orphaned_uploads(self, orphans: Orphans) -> int:
        """The janitor: removes the temporary uploads of dead owners (`Orphans.removable`),
        never one of a live owner. Returns how many."""
