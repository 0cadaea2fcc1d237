"""One upload into the S3 store: the multipart state machine behind `S3BlobStore.begin_upload`.

States, in order:
    buffering    no part is full yet; every byte is in memory
    multipart    an S3 multipart upload is open; full parts are sent, at most
                 `PARTS_IN_FLIGHT` at once, plus the one being filled in memory
    committing   `commit(sha256)` runs (once; later calls wait for the same run)
    done         committed or aborted; a write raises

Where the bytes go:
- An upload that never fills one part stays in memory until its digest is verified and is
  then written straight to its final key with one PUT (atomic in S3).
- When the client declared the digest (the SDK always does), the parts go straight to the
  final key `sha256/<hex>`: an S3 multipart upload is no object until it is completed, and
  commit completes it only after the registry verified the digest (or aborts it when the blob
  is stored already: a committed key is never rewritten); a mismatch aborts it.
- Without a declared digest the key is unknown until the end, so the parts go to
  `tmp/<owner>/<uuid>` (the owner: this server process, `storage.uploads`); commit completes
  that, server-side copies it to `sha256/<hex>` and deletes the temporary object.

NOTHING EVER APPEARS UNDER A FINAL KEY BEFORE THE REGISTRY VERIFIED THE DIGEST. A failed or
cancelled upload is aborted; whatever an abort could not remove (the store was down), or a
crashed server left, is swept by the janitor: at once once its owner is dead
(`remove_orphaned_uploads`; a multipart upload under a final key is recorded with its owner
for that), else after the upload TTL (`remove_stale_uploads`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from typing import TYPE_CHECKING

from minio.datatypes import Part

from registry_server.blobstore.base import BlobUpload, blob_key
from registry_server.errors import InvalidArgument

if TYPE_CHECKING:
    from registry_server.blobstore.s3 import S3BlobStore

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
#: Parts of one upload sent at once (the SDKs' own PUTs send 3 at once); memory per upload is
#: this many parts plus the one being filled.
PARTS_IN_FLIGHT = 2
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000  # S3's maximum number of parts in one multipart upload


class S3Upload(BlobUpload):
    """One upload in progress (see the module docstring). Exactly one of commit() or abort()
    ends it; abort() after a commit that failed or was cancelled cleans up after it."""

    def __init__(self, store: S3BlobStore, expected_sha256: str = ""):
        self.store = store
        #: The declared digest whose final key the parts go to; "" stages them under tmp/.
        self.expected = expected_sha256
        owner = f"{store.owner.owner}/" if store.owner is not None else ""
        self.key = store.key(blob_key(expected_sha256) if expected_sha256 else f"tmp/{owner}{uuid.uuid4().hex}")
        #: Recorded with its owner (a key under sha256/ names none), so the janitor knows whose it is.
        self._recorded: str | None = None
        self.size = 0
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._sending: list[asyncio.Future[Part]] = []
        self._committing: asyncio.Future[None] | None = None
        self._done = False

    # -------------------------------------------------------------- writing

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise RuntimeError("write after commit/abort")
        if not chunk:
            return
        self._chunks.append(bytes(chunk))
        self._buffered += len(chunk)
        self.size += len(chunk)
        if self._buffered >= self.store.part_size:
            await self._flush_part()

    async def _flush_part(self) -> None:
        data = b"".join(self._chunks)
        self._chunks, self._buffered = [], 0
        # At most PARTS_IN_FLIGHT parts in flight: wait for the oldest before sending this
        # one, so the memory held stays bounded.
        await self._wait_sending(PARTS_IN_FLIGHT - 1)
        if self._upload_id is None:
            self._upload_id = await self.store.call(
                "start a multipart upload",
                self.store.client._create_multipart_upload,
                self.store.bucket,
                self.key,
                {"Content-Type": "application/octet-stream"},
            )
            if self.expected and self.store.owner is not None:
                await self.store.owner.multipart_started(self.key, self._upload_id)
                self._recorded = self._upload_id
        number = len(self._parts) + len(self._sending) + 1
        if number > MAX_PARTS:
            raise InvalidArgument(
                f"the artifact is larger than {MAX_PARTS} parts of {self.store.part_size // MiB} MiB, "
                "the most one S3 upload can hold; split it or store it elsewhere"
            )
        self._sending.append(asyncio.ensure_future(self._send_part(number, data)))

    async def _send_part(self, number: int, data: bytes) -> Part:
        etag = await self.store.call(
            f"upload part {number} of {self.key}",
            self.store.client._upload_part,
            self.store.bucket,
            self.key,
            data,
            None,
            self._upload_id,
            number,
        )
        return Part(number, etag)

    async def _wait_sending(self, keep: int = 0) -> None:
        """Waits for the oldest parts in flight until at most `keep` remain."""
        while len(self._sending) > keep:
            # Shielded: if the caller is cancelled, the part still finishes (its thread would
            # anyway) and abort() waits for it before aborting the multipart upload.
            part = await asyncio.shield(self._sending[0])
            self._sending.pop(0)
            self._parts.append(part)

    # -------------------------------------------------------------- ending

    async def commit(self, sha256: str) -> None:
        if self._committing is None:
            if self._done:
                return
            self._done = True
            self._committing = asyncio.ensure_future(self._commit(sha256))
        # Shielded: a caller cancelled mid-copy must not leave a copy running behind its back;
        # abort() waits for the commit to end before the registry removes the blob again.
        await asyncio.shield(self._committing)

    async def _commit(self, sha256: str) -> None:
        final = self.store.key(blob_key(sha256))
        if self._upload_id is None:
            # The whole artifact is in memory and verified: one atomic PUT, unless stored already.
            data = b"".join(self._chunks)
            self._chunks, self._buffered = [], 0
            if await self.store.stored_size(final) != len(data):
                await self.store.call(
                    f"store {final}",
                    self.store.client.put_object,
                    self.store.bucket,
                    final,
                    io.BytesIO(data),
                    len(data),
                    content_type="application/octet-stream",
                    part_size=max(self.store.part_size, MIN_PART_SIZE),
                )
            return
        if self.expected:
            if sha256 != self.expected:
                raise RuntimeError(f"commit({sha256}) of an upload staged for {self.expected}")
            await self._commit_in_place(final)
            return
        await self._complete_multipart()
        # From here the temporary object is complete; any failure below leaves it to the janitor.
        try:
            if await self.store.stored_size(final) != self.size:
                await self.store.copy(self.key, final, self.size)
        except BaseException:
            await self._remove_temp()
            raise
        await self._remove_temp()

    async def _commit_in_place(self, final: str) -> None:
        """Completes the multipart upload staged under the (verified) final key, unless the
        blob is stored already (then the upload is aborted: a committed key is never rewritten)."""
        if await self.store.stored_size(final) == self.size:
            self._chunks, self._buffered = [], 0
            await self._abort_multipart()
            return
        await self._complete_multipart()

    async def _complete_multipart(self) -> None:
        """Sends what is buffered, waits for every part, and completes the upload at `key`."""
        if self._chunks:
            await self._flush_part()
        await self._wait_sending()
        await self.store.call(
            f"complete the upload of {self.key}",
            self.store.client._complete_multipart_upload,
            self.store.bucket,
            self.key,
            self._upload_id,
            self._parts,
        )
        self._upload_id = None
        await self._forget_record()

    async def _forget_record(self) -> None:
        """Drops the multipart upload's owner record (best effort: the owner's own rows go when
        it stops or is judged dead)."""
        if self._recorded is not None and self.store.owner is not None:
            upload_id, self._recorded = self._recorded, None
            try:
                await self.store.owner.multipart_ended(upload_id)
            except Exception as e:  # noqa: BLE001 - the commit or abort itself succeeded
                log.warning("could not drop the record of multipart upload %s (%r)", upload_id, e)

    async def _abort_multipart(self) -> None:
        sending, self._sending = self._sending, []
        for future in sending:
            try:
                await future
            except BaseException:  # noqa: BLE001 - the part's failure is why we abort
                pass
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                await self.store.call(
                    f"abort the upload of {self.key}",
                    self.store.client._abort_multipart_upload,
                    self.store.bucket,
                    self.key,
                    upload_id,
                )
            except Exception as e:  # noqa: BLE001 - best effort; the janitor retries
                log.warning("could not abort multipart upload %s (%s); the janitor will remove it", self.key, e)
                return
            await self._forget_record()

    async def abort(self) -> None:
        self._done = True
        self._chunks, self._buffered = [], 0
        if self._committing is not None:
            try:
                await self._committing
            except BaseException:  # noqa: BLE001 - its failure is why we abort
                pass
        await self._abort_multipart()
        await self._remove_temp()

    async def _remove_temp(self) -> None:
        if self.expected:
            return  # staged under the final key: there is no temporary object to remove
        try:
            await self.store.call(f"remove {self.key}", self.store.client.remove_object, self.store.bucket, self.key)
        except Exception as e:  # noqa: BLE001 - best effort; the janitor retries
            log.warning("could not remove temporary upload %s (%s); the janitor will remove it", self.key, e)
