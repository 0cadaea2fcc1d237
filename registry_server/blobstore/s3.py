"""Blobs in any S3 endpoint (MinIO in production, AWS S3, SeaweedFS in the tests).

Layout under `s3://<bucket>/<prefix>`:
    sha256/<hex>   committed, content-addressed blobs (final keys)
    tmp/<owner>/<uuid>  uploads in progress without a declared digest (multipart uploads,
                   then briefly a completed object); <owner> is the server process's upload
                   lease (`storage.uploads`), tmp/<uuid> without one

The store's settings are parsed in `s3_settings`, one upload's multipart state machine lives
in `s3_upload`; this module holds the store: the client, reads, deletes, presigned URLs, the
server-side copy an upload's commit may need, and the janitor.

The `minio` SDK is synchronous: EVERY SDK CALL RUNS IN THIS STORE'S BOUNDED THREAD POOL (see
`call`), so the event loop never waits on the network, and at most `max_workers` requests run
at once.

Connection failures and refusals from the store become `Unavailable` with a message saying
what failed; a missing key becomes FileNotFoundError / None as the interface says. At
start-up they become `StartupError` (missing credentials `ConfigError`), which only the
process start-up turns into an exit message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.credentials import AWSConfigProvider, ChainedProvider, EnvAWSProvider, IamAwsProvider
from minio.datatypes import Part
from minio.error import MinioException, S3Error

from registry_server.blobstore.base import DEFAULT_CHUNK, BlobStore, BlobUpload, Observer, Orphans, blob_key
from registry_server.blobstore.s3_settings import S3Settings, parse_endpoint
from registry_server.blobstore.s3_upload import MAX_PARTS, MIN_PART_SIZE, GiB, MiB, S3Upload
from registry_server.errors import ConfigError, StartupError, Unavailable

if TYPE_CHECKING:
    from registry_server.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The google.rpc.ErrorInfo reason of every Unavailable this store raises.
STORE_UNAVAILABLE = "ARTIFACT_STORE_UNAVAILABLE"

#: Size of one uploaded part. S3 allows at most 10,000 parts, so one upload holds up to 156 GiB.
DEFAULT_PART_SIZE = 16 * MiB
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
            raise ConfigError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum part)")
        if copy_part_size < MIN_PART_SIZE or copy_part_size > 5 * GiB:
            raise ConfigError("copy_part_size must be between 5 MiB and 5 GiB")
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
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        """The store for MODELREG_ARTIFACTS=s3://bucket/prefix and MODELREG_S3_*; a bad value
        raises ConfigError saying what to fix."""
        s3 = S3Settings.from_settings(settings)
        return cls(
            endpoint=s3.endpoint,
            bucket=s3.bucket,
            prefix=s3.prefix,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            secure=s3.secure,
            region=s3.region,
        )

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    # -------------------------------------------------------------- plumbing

    async def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs one SDK call in the pool; maps store failures to Unavailable. S3 errors that
        mean "no such key/upload" pass through for the caller to interpret. Every request of
        the store and of its uploads goes through here."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except S3Error as e:
            if e.code in _MISSING:
                raise
            raise Unavailable(
                f"the artifact store s3://{self.bucket} at {self.endpoint} refused to {what} "
                f"({e.code}: {e.message}); check the MODELREG_S3_* settings and the bucket's permissions, "
                "then retry",
                reason=STORE_UNAVAILABLE,
            ) from e
        except (MinioException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as e:
            raise Unavailable(
                f"the artifact store at {self.endpoint} is unreachable; could not {what} ({_reason(e)}); "
                "check that it is running and that MODELREG_S3_ENDPOINT points at it, then retry",
                reason=STORE_UNAVAILABLE,
            ) from e

    async def stored_size(self, key: str) -> int | None:
        """The size of the object at `key` (a full key, prefix included), None if absent."""
        try:
            stat = await self.call(f"look up {key}", self.client.stat_object, self.bucket, key)
        except S3Error:
            return None
        return stat.size

    async def copy(self, source: str, target: str, size: int) -> None:
        """Server-side copy of full keys; a multipart copy above `copy_threshold` (CopyObject
        stops at 5 GiB). A failed multipart copy is aborted (best effort)."""
        if size <= self.copy_threshold:
            await self.call(
                f"copy {source} to {target}",
                self.client.copy_object,
                self.bucket,
                target,
                CopySource(self.bucket, source),
            )
            return
        part = max(self.copy_part_size, -(-size // MAX_PARTS))
        upload_id = await self.call(
            f"start a multipart copy to {target}",
            self.client._create_multipart_upload,
            self.bucket,
            target,
            {"Content-Type": "application/octet-stream"},
        )
        copy_source = quote(f"/{self.bucket}/{source}")

        async def copy_part(number: int, start: int) -> Part:
            end = min(start + part, size) - 1
            etag, _ = await self.call(
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
            await self.call(
                f"complete the copy to {target}",
                self.client._complete_multipart_upload,
                self.bucket,
                target,
                upload_id,
                list(parts),
            )
        except BaseException:
            try:
                await self.call(
                    f"abort the copy to {target}", self.client._abort_multipart_upload, self.bucket, target, upload_id
                )
            except Exception as e:  # noqa: BLE001 - best effort; the janitor sweeps tmp/ only
                log.warning("could not abort multipart copy to %s: %s", target, e)
            raise

    # -------------------------------------------------------------- BlobStore

    async def start(self) -> None:
        """Checks the store answers, creates the bucket if missing and finds the credentials.
        Raises StartupError (the store is unreachable or refuses) or ConfigError (no
        credentials): the server cannot start, and the message says what to check."""
        try:
            exists = await self.call(f"check bucket {self.bucket}", self.client.bucket_exists, self.bucket)
            if not exists:
                try:
                    await self.call(f"create bucket {self.bucket}", self.client.make_bucket, self.bucket, self.region)
                    log.info("created bucket %s", self.bucket)
                except Unavailable as e:
                    cause = e.__cause__
                    if not (isinstance(cause, S3Error) and cause.code == "BucketAlreadyOwnedByYou"):
                        raise
            if self._credentials is not None:
                await self.call("find S3 credentials", self._credentials.retrieve)
        except ValueError as e:  # raised by the credential chain
            raise ConfigError(
                f"no credentials for the artifact store {self.description} ({e}); set MODELREG_S3_ACCESS_KEY "
                "and MODELREG_S3_SECRET_KEY, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an IAM role"
            ) from e
        except Unavailable as e:
            raise StartupError(f"cannot start with the artifact store {self.description}: {e.message}") from e

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def probe(self) -> None:
        if not await self.call(f"check bucket {self.bucket}", self.client.bucket_exists, self.bucket):
            raise Unavailable(
                f"the bucket {self.bucket} at {self.endpoint} is gone; create it again or fix MODELREG_ARTIFACTS",
                reason=STORE_UNAVAILABLE,
            )

    async def begin_upload(self, expected_sha256: str = "") -> BlobUpload:
        return S3Upload(self, expected_sha256)

    async def size(self, sha256: str) -> int | None:
        return await self.stored_size(self.key(blob_key(sha256)))

    async def read(
        self, sha256: str, offset: int = 0, chunk_size: int = DEFAULT_CHUNK, observe: Observer | None = None
    ) -> AsyncIterator[bytes]:
        key = self.key(blob_key(sha256))
        position = offset
        while True:
            try:
                response = await self.call(
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
                    chunk = await self.call(f"read {key}", read_chunk)
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
            await self.call(f"delete {key}", self.client.remove_object, self.bucket, key)
        except S3Error:
            pass

    async def presign_get(self, sha256: str, expires: timedelta, filename: str) -> str:
        key = self.key(blob_key(sha256))
        safe = _SAFE_FILENAME.sub("_", filename) or "artifact"
        return await self.call(
            f"presign {key}",
            self.client.presigned_get_object,
            self.bucket,
            key,
            expires=expires,
            response_headers={"response-content-disposition": f'attachment; filename="{safe}"'},
        )

    async def remove_stale_uploads(self, older_than: timedelta) -> int:
        cutoff = datetime.now(UTC) - older_than
        tmp = self.key("tmp/")
        removed = 0

        def stale_objects() -> list[str]:
            return [
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix=tmp, recursive=True)
                if not o.is_dir and o.last_modified is not None and o.last_modified < cutoff
            ]

        for name in await self.call("list temporary uploads", stale_objects):
            try:
                await self.call(f"remove {name}", self.client.remove_object, self.bucket, name)
                removed += 1
            except S3Error:
                pass

        # Incomplete multipart uploads anywhere under the prefix: uploads to tmp/, and a
        # multipart copy to a final key that was cut (it is no object until completed).
        marker: str | None = None
        while True:
            page = await self.call(
                "list incomplete multipart uploads",
                self.client._list_multipart_uploads,
                self.bucket,
                prefix=self.key(""),
                key_marker=marker,
            )
            for upload in page.uploads:
                if upload.initiated_time is not None and upload.initiated_time < cutoff:
                    try:
                        await self.call(
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

    async def remove_orphaned_uploads(self, orphans: Orphans) -> int:
        now = datetime.now(UTC)
        tmp = self.key("tmp/")
        removed = 0

        def owned_objects() -> list[tuple[str, str, timedelta]]:
            out = []
            for o in self.client.list_objects(self.bucket, prefix=tmp, recursive=True):
                rest = o.object_name[len(tmp) :]
                if o.is_dir or "/" not in rest or o.last_modified is None:
                    continue  # tmp/<uuid>: no owner, the TTL's
                out.append((o.object_name, rest.split("/", 1)[0], now - o.last_modified))
            return out

        for name, owner_id, age in await self.call("list temporary uploads", owned_objects):
            if orphans.removable(owner_id, age):
                try:
                    await self.call(f"remove {name}", self.client.remove_object, self.bucket, name)
                    removed += 1
                except S3Error:
                    pass

        marker: str | None = None
        while True:
            page = await self.call(
                "list incomplete multipart uploads",
                self.client._list_multipart_uploads,
                self.bucket,
                prefix=self.key(""),
                key_marker=marker,
            )
            for upload in page.uploads:
                name = upload.object_name or ""
                if name.startswith(tmp) and "/" in name[len(tmp) :]:
                    owner: str | None = name[len(tmp) :].split("/", 1)[0]
                else:
                    owner = orphans.multipart_owners.get(upload.upload_id or "")
                if owner is None or upload.initiated_time is None:
                    continue  # unrecorded: the TTL's
                if orphans.removable(owner, now - upload.initiated_time):
                    try:
                        await self.call(
                            f"abort the upload of {name}",
                            self.client._abort_multipart_upload,
                            self.bucket,
                            name,
                            upload.upload_id,
                        )
                        removed += 1
                    except S3Error:
                        pass
            if not page.is_truncated or not page.next_key_marker or page.next_key_marker == marker:
                return removed
            marker = page.next_key_marker
