"""Blobs in any S3 endpoint (MinIO in production, AWS S3, SeaweedFS in the tests).

Layout under `s3://<bucket>/<prefix>`:
    sha256/<hex>   committed, content-addressed blobs (final keys)
    tmp/<uuid>     uploads in progress (multipart uploads, then briefly a completed object)

The `minio` SDK is synchronous: EVERY SDK CALL RUNS IN THIS STORE'S BOUNDED THREAD POOL, so the
event loop never waits on the network, and at most `max_workers` requests run at once.

An upload keeps at most `PARTS_IN_FLIGHT` + 1 parts in memory: those being sent and the one
being filled.
An upload that never fills one part stays in memory until its digest is verified and is then
written straight to its final key with one PUT (atomic in S3). A larger one is a multipart
upload. When the client declared the digest (the SDK always does), its parts go straight to
the final key `sha256/<hex>`: an S3 multipart upload is no object until it is completed, and
commit completes it only after the registry verified the digest (or aborts it when the blob
is there already); a mismatch aborts it. Without a declared digest the key is unknown until
the end, so the parts go to `tmp/<uuid>`, and commit completes that and server-side copies
it to `sha256/<hex>` (a multipart copy above `copy_threshold`, since CopyObject stops at
5 GiB), then deletes the temporary object. Nothing ever appears under a final key before the
registry verified the digest. A failed or cancelled upload is aborted; whatever an abort could
not remove (the store was down) is swept by `remove_stale_uploads`, the janitor.

Connection failures and refusals from the store become `Unavailable` with a message saying
what failed; a missing key becomes FileNotFoundError / None as the interface says.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import quote, urlparse

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.credentials import AWSConfigProvider, ChainedProvider, EnvAWSProvider, IamAwsProvider
from minio.datatypes import Part
from minio.error import MinioException, S3Error
from minio.helpers import check_bucket_name

from registry_server.blobstore.base import DEFAULT_CHUNK, BlobStore, BlobUpload, Observer, blob_key
from registry_server.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1024 * 1024
GiB = 1024 * MiB
#: Size of one uploaded part. S3 allows at most 10,000 parts, so one upload holds up to 156 GiB.
DEFAULT_PART_SIZE = 16 * MiB
#: Parts of one upload sent at once (the SDKs' own PUTs send 3 at once); memory per upload is
#: this many parts plus the one being filled.
PARTS_IN_FLIGHT = 2
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000
#: Above this size commit copies in parts (UploadPartCopy) instead of one CopyObject, which S3
#: caps at 5 GiB; smaller requests also finish well inside the read timeout.
DEFAULT_COPY_THRESHOLD = 1 * GiB
DEFAULT_COPY_PART_SIZE = 256 * MiB
COPY_CONCURRENCY = 4
#: A download reads the blob with ranged GETs of this many bytes, streamed in chunks, so no
#: single request stays open for a whole multi-GB blob behind a slow client.
DEFAULT_READ_WINDOW = 64 * MiB
DEFAULT_MAX_WORKERS = 16

_MISSING = ("NoSuchKey", "NoSuchObject", "NoSuchUpload")
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def parse_location(location: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    parsed = urlparse(location)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InvalidArgument(
            f"MODELREG_ARTIFACTS={location!r} is not an S3 location; use s3://bucket or s3://bucket/prefix"
        )
    return parsed.netloc, parsed.path.strip("/")


def parse_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """Accepts `host:port` or a URL (`http://host:port`, whose scheme decides TLS). An empty
    endpoint means AWS S3."""
    endpoint = endpoint.strip()
    if not endpoint:
        return "s3.amazonaws.com", True
    if "://" in endpoint:
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path.strip("/"):
            raise InvalidArgument(
                f"MODELREG_S3_ENDPOINT={endpoint!r} must be host:port or http(s)://host:port, without a path"
            )
        return parsed.netloc, parsed.scheme == "https"
    return endpoint.rstrip("/"), secure


def _reason(exc: BaseException) -> str:
    """A short description of a connection failure (urllib3's are long and nested)."""
    inner = getattr(exc, "reason", None)
    if isinstance(inner, BaseException):
        exc = inner
    text = str(exc)
    # "HTTPConnection(host=..., port=...): Failed to establish a new connection: [Errno 111] ..."
    if ": " in text and type(exc).__name__ in ("NewConnectionError", "ConnectTimeoutError"):
        text = text.split(": ", 1)[1]
    text = text[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _S3Upload(BlobUpload):
    def __init__(self, store: S3BlobStore, expected_sha256: str = ""):
        self.store = store
        #: The declared digest whose final key the parts go to; "" stages them under tmp/.
        self.expected = expected_sha256
        self.key = store.key(blob_key(expected_sha256) if expected_sha256 else f"tmp/{uuid.uuid4().hex}")
        self.size = 0
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._sending: list[asyncio.Future] = []
        self._committing: asyncio.Future | None = None
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
            self._upload_id = await self.store._call(
                "start a multipart upload",
                self.store.client._create_multipart_upload,
                self.store.bucket,
                self.key,
                {"Content-Type": "application/octet-stream"},
            )
        number = len(self._parts) + len(self._sending) + 1
        if number > MAX_PARTS:
            raise InvalidArgument(
                f"the artifact is larger than {MAX_PARTS} parts of {self.store.part_size // MiB} MiB, "
                "the most one S3 upload can hold; split it or store it elsewhere"
            )
        self._sending.append(asyncio.ensure_future(self._send_part(number, data)))

    async def _send_part(self, number: int, data: bytes) -> Part:
        etag = await self.store._call(
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
            if await self.store._stored_size(final) != len(data):
                await self.store._call(
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
            if await self.store._stored_size(final) != self.size:
                await self.store._copy(self.key, final, self.size)
        except BaseException:
            await self._remove_temp()
            raise
        await self._remove_temp()

    async def _commit_in_place(self, final: str) -> None:
        """Completes the multipart upload staged under the (verified) final key, unless the
        blob is stored already (then the upload is aborted: a committed key is never rewritten)."""
        if await self.store._stored_size(final) == self.size:
            self._chunks, self._buffered = [], 0
            await self._abort_multipart()
            return
        await self._complete_multipart()

    async def _complete_multipart(self) -> None:
        """Sends what is buffered, waits for every part, and completes the upload at `key`."""
        if self._chunks:
            await self._flush_part()
        await self._wait_sending()
        await self.store._call(
            f"complete the upload of {self.key}",
            self.store.client._complete_multipart_upload,
            self.store.bucket,
            self.key,
            self._upload_id,
            self._parts,
        )
        self._upload_id = None

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
                await self.store._call(
                    f"abort the upload of {self.key}",
                    self.store.client._abort_multipart_upload,
                    self.store.bucket,
                    self.key,
                    upload_id,
                )
            except Exception as e:  # noqa: BLE001 - best effort; the janitor retries
                log.warning("could not abort multipart upload %s (%s); the janitor will remove it", self.key, e)

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
            await self.store._call(
                f"remove {self.key}", self.store.client.remove_object, self.store.bucket, self.key
            )
        except Exception as e:  # noqa: BLE001 - best effort; the janitor retries
            log.warning("could not remove temporary upload %s (%s); the janitor will remove it", self.key, e)


class S3BlobStore(BlobStore):
    """Blobs in `s3://bucket/prefix` through the minio SDK (see the module docstring)."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        access_key: str = "",
        secret_key: str = "",
        secure: bool = True,
        region: str = "",
        part_size: int = DEFAULT_PART_SIZE,
        copy_threshold: int = DEFAULT_COPY_THRESHOLD,
        copy_part_size: int = DEFAULT_COPY_PART_SIZE,
        read_window: int = DEFAULT_READ_WINDOW,
        max_workers: int = DEFAULT_MAX_WORKERS,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
    ):
        if part_size < MIN_PART_SIZE:
            raise InvalidArgument(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum part)")
        if copy_part_size < MIN_PART_SIZE or copy_part_size > 5 * GiB:
            raise InvalidArgument("copy_part_size must be between 5 MiB and 5 GiB")
        self.endpoint, self.secure = parse_endpoint(endpoint, secure)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region or None
        self.part_size = part_size
        self.copy_threshold = copy_threshold
        self.copy_part_size = copy_part_size
        self.read_window = read_window
        scheme = "https" if self.secure else "http"
        self.description = f"S3 bucket s3://{bucket}/{self.prefix} at {scheme}://{self.endpoint}"
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="modelreg-s3")
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=max_workers,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            # A few quick retries ride over a blip; a store that is down fails within seconds.
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        credentials = None
        if not access_key:
            # No key given: the AWS chain (env, ~/.aws, instance role / IRSA web identity).
            credentials = ChainedProvider([EnvAWSProvider(), AWSConfigProvider(), IamAwsProvider()])
        self.client = Minio(
            self.endpoint,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=self.secure,
            region=self.region,
            http_client=http,
            credentials=credentials,
        )
        self._credentials = credentials

    @classmethod
    def from_settings(cls, settings: Any) -> S3BlobStore:
        """The store for MODELREG_ARTIFACTS=s3://bucket/prefix and MODELREG_S3_*; bad values
        stop the server with a message saying what to fix."""
        try:
            bucket, prefix = parse_location(settings.artifacts_location)
            try:
                check_bucket_name(bucket, strict=True)
            except ValueError as e:
                raise InvalidArgument(f"MODELREG_ARTIFACTS names an invalid bucket {bucket!r}: {e}") from None
            return cls(
                endpoint=settings.s3_endpoint,
                bucket=bucket,
                prefix=prefix,
                access_key=settings.s3_access_key,
                secret_key=settings.s3_secret_key,
                secure=settings.s3_secure,
                region=settings.s3_region,
            )
        except InvalidArgument as e:
            raise SystemExit(e.message) from None

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    # -------------------------------------------------------------- plumbing

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs one SDK call in the pool; maps store failures to Unavailable. S3 errors that
        mean "no such key/upload" pass through for the caller to interpret."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except S3Error as e:
            if e.code in _MISSING:
                raise
            raise Unavailable(
                f"the artifact store s3://{self.bucket} at {self.endpoint} refused to {what} "
                f"({e.code}: {e.message}); check the MODELREG_S3_* settings and the bucket's permissions, "
                "then retry"
            ) from e
        except (MinioException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as e:
            raise Unavailable(
                f"the artifact store at {self.endpoint} is unreachable; could not {what} ({_reason(e)}); "
                "check that it is running and that MODELREG_S3_ENDPOINT points at it, then retry"
            ) from e

    async def _stored_size(self, key: str) -> int | None:
        try:
            stat = await self._call(f"look up {key}", self.client.stat_object, self.bucket, key)
        except S3Error:
            return None
        return stat.size

    async def _copy(self, source: str, target: str, size: int) -> None:
        """Server-side copy; a multipart copy above `copy_threshold` (CopyObject stops at 5 GiB)."""
        if size <= self.copy_threshold:
            await self._call(
                f"copy {source} to {target}",
                self.client.copy_object,
                self.bucket,
                target,
                CopySource(self.bucket, source),
            )
            return
        part = max(self.copy_part_size, -(-size // MAX_PARTS))
        upload_id = await self._call(
            f"start a multipart copy to {target}",
            self.client._create_multipart_upload,
            self.bucket,
            target,
            {"Content-Type": "application/octet-stream"},
        )
        copy_source = quote(f"/{self.bucket}/{source}")

        async def copy_part(number: int, start: int) -> Part:
            end = min(start + part, size) - 1
            etag, _ = await self._call(
                f"copy bytes {start}-{end} of {source} to {target}",
                self.client._upload_part_copy,
                self.bucket,
                target,
                upload_id,
                number,
                {"x-amz-copy-source": copy_source, "x-amz-copy-source-range": f"bytes={start}-{end}"},
            )
            return Part(number, etag)

        limit = asyncio.Semaphore(COPY_CONCURRENCY)  # leave pool threads for other requests

        async def bounded(number: int, start: int) -> Part:
            async with limit:
                return await copy_part(number, start)

        try:
            results = await asyncio.gather(
                *(bounded(i + 1, start) for i, start in enumerate(range(0, size, part))),
                return_exceptions=True,
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise failed[0]
            parts = [r for r in results if isinstance(r, Part)]
            await self._call(
                f"complete the copy to {target}",
                self.client._complete_multipart_upload,
                self.bucket,
                target,
                upload_id,
                list(parts),
            )
        except BaseException:
            try:
                await self._call(
                    f"abort the copy to {target}", self.client._abort_multipart_upload, self.bucket, target, upload_id
                )
            except Exception as e:  # noqa: BLE001 - best effort; the janitor sweeps tmp/ only
                log.warning("could not abort multipart copy to %s: %s", target, e)
            raise

    # -------------------------------------------------------------- BlobStore

    async def start(self) -> None:
        try:
            exists = await self._call(f"check bucket {self.bucket}", self.client.bucket_exists, self.bucket)
            if not exists:
                try:
                    await self._call(
                        f"create bucket {self.bucket}", self.client.make_bucket, self.bucket, self.region
                    )
                    log.info("created bucket %s", self.bucket)
                except Unavailable as e:
                    cause = e.__cause__
                    if not (isinstance(cause, S3Error) and cause.code == "BucketAlreadyOwnedByYou"):
                        raise
            if self._credentials is not None:
                await self._call("find S3 credentials", self._credentials.retrieve)
        except ValueError as e:  # raised by the credential chain
            raise SystemExit(
                f"no credentials for the artifact store {self.description} ({e}); set MODELREG_S3_ACCESS_KEY "
                "and MODELREG_S3_SECRET_KEY, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an IAM role"
            ) from e
        except Unavailable as e:
            # Same convention as an address in use: the server cannot start, and says why.
            raise SystemExit(f"cannot start with the artifact store {self.description}: {e.message}") from e

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def begin_upload(self, expected_sha256: str = "") -> BlobUpload:
        return _S3Upload(self, expected_sha256)

    async def size(self, sha256: str) -> int | None:
        return await self._stored_size(self.key(blob_key(sha256)))

    async def read(
        self, sha256: str, offset: int = 0, chunk_size: int = DEFAULT_CHUNK, observe: Observer | None = None
    ) -> AsyncIterator[bytes]:
        key = self.key(blob_key(sha256))
        position = offset
        while True:
            try:
                response = await self._call(
                    f"read {key}",
                    self.client.get_object,
                    self.bucket,
                    key,
                    offset=position,
                    length=self.read_window,
                )
            except S3Error as e:
                raise FileNotFoundError(f"s3://{self.bucket}/{key}") from e
            except Unavailable as e:
                cause = e.__cause__
                if isinstance(cause, S3Error) and cause.code == "InvalidRange":
                    return  # `position` is the end of the blob
                raise
            received = 0

            def read_chunk(response=response) -> bytes:
                chunk = response.read(chunk_size)
                if chunk and observe is not None:
                    observe(chunk)
                return chunk

            try:
                while True:
                    chunk = await self._call(f"read {key}", read_chunk)
                    if not chunk:
                        break
                    received += len(chunk)
                    yield chunk
            finally:
                response.close()
                response.release_conn()
            position += received
            if received < self.read_window:
                return

    async def delete(self, sha256: str) -> None:
        key = self.key(blob_key(sha256))
        try:
            await self._call(f"delete {key}", self.client.remove_object, self.bucket, key)
        except S3Error:
            pass

    async def presign_get(self, sha256: str, expires: timedelta, filename: str) -> str:
        key = self.key(blob_key(sha256))
        safe = _SAFE_FILENAME.sub("_", filename) or "artifact"
        return await self._call(
            f"presign {key}",
            self.client.presigned_get_object,
            self.bucket,
            key,
            expires=expires,
            response_headers={"response-content-disposition": f'attachment; filename="{safe}"'},
        )

    async def remove_stale_uploads(self, older_than: timedelta) -> int:
        cutoff = datetime.now(timezone.utc) - older_than
        tmp = self.key("tmp/")
        removed = 0

        def stale_objects() -> list[str]:
            return [
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix=tmp, recursive=True)
                if not o.is_dir and o.last_modified is not None and o.last_modified < cutoff
            ]

        for name in await self._call("list temporary uploads", stale_objects):
            try:
                await self._call(f"remove {name}", self.client.remove_object, self.bucket, name)
                removed += 1
            except S3Error:
                pass

        # Incomplete multipart uploads anywhere under the prefix: uploads to tmp/, and a
        # multipart copy to a final key that was cut (it is no object until completed).
        marker: str | None = None
        while True:
            page = await self._call(
                "list incomplete multipart uploads",
                self.client._list_multipart_uploads,
                self.bucket,
                prefix=self.key(""),
                key_marker=marker,
            )
            for upload in page.uploads:
                if upload.initiated_time is not None and upload.initiated_time < cutoff:
                    try:
                        await self._call(
                            f"abort the upload of {upload.object_name}",
                            self.client._abort_multipart_upload,
                            self.bucket,
                            upload.object_name,
                            upload.upload_id,
                        )
                        removed += 1
                    except S3Error:
                        pass
            # Every upload has its own key, so the key marker alone pages correctly.
            if not page.is_truncated or not page.next_key_marker or page.next_key_marker == marker:
                return removed
            marker = page.next_key_marker
