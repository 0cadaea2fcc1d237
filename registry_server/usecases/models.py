"""Use cases of models and versions: create, read, update, register (bytes and all), compare,
download, delete. Every front end (gRPC servicers, background tasks, later the console)
calls these; each write loads what it needs, asks `domain` whether and how, and persists.
Storage and the blob store decide nothing."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from modelreg_runtime import tracing
from registry_server.blobstore.base import DEFAULT_CHUNK, BlobStore, HashingUpload
from registry_server.domain import aliases as da
from registry_server.domain import deployments as dd
from registry_server.domain import models as dm
from registry_server.domain import signatures as ds
from registry_server.domain.access import Caller, Permission, project_of
from registry_server.domain.names import VersionRef
from registry_server.domain.stages import Stage
from registry_server.errors import DataLoss, InvalidArgument, ModelNotFound, RegistryError, Unavailable
from registry_server.metrics import RegistryMetrics
from registry_server.onnx_reader import NotOnnx, OnnxReader
from registry_server.read_cache import VersionCache
from registry_server.storage.aliases import aliases_of
from registry_server.storage.deployments import DeploymentStore
from registry_server.storage.models import ModelStore, RequestIdTaken
from registry_server.usecases.access import Access

log = logging.getLogger(__name__)

MAX_CHUNK = 4 * 1024 * 1024


@dataclass
class Download:
    version: dm.ModelVersion
    offset: int
    chunks: AsyncIterator[bytes]


class Models:
    def __init__(
        self,
        store: ModelStore,
        deployments: DeploymentStore,
        blobs: BlobStore,
        cache: VersionCache,
        access: Access,
        metrics: RegistryMetrics | None = None,
    ):
        self.access = access
        self.metrics = metrics or RegistryMetrics()
        self.store = store
        self.deployments = deployments
        self.blobs = blobs
        self.cache = cache

    # ------------------------------------------------------------------ models

    async def create_model(self, caller: Caller, model: dm.Model) -> dm.Model:
        """Creates a model in its project (`default` when empty). With auth on the project
        must exist; with auth off it is created on first use."""
        model = replace(model, project=project_of(model.project))
        await self.access.require(caller, Permission.CREATE_MODEL, project=model.project)
        dm.validate_tags(model.tags, "model.tags")
        try:
            return await self.store.create_model(model, caller.name, create_project=not caller.authenticated)
        finally:
            self.access.forget_models([model.name])

    async def get_model(self, caller: Caller, name: str) -> dm.Model:
        model = await self.store.get_model(name)
        if caller.authenticated:
            caller.require(Permission.READ, model.project)
        return model

    async def list_models(self, caller: Caller, after: str, limit: int, project: str = "") -> list[dm.Model]:
        """Models in name order, only of the projects the caller may read."""
        if project:
            await self.access.require(caller, Permission.READ, project=project)
        return await self.store.list_models(after, limit, project, self.access.readable(caller))

    # ------------------------------------------------------------------ registration

    async def register(
        self, caller: Caller, nv: dm.NewVersion, chunks: AsyncIterator[bytes]
    ) -> tuple[dm.ModelVersion, bool]:
        """Stores the bytes, verifies them, and creates a READY version in one transaction.
        Returns (version, deduplicated)."""
        with self.metrics.outcome(self.metrics.registrations):
            return await self._register(caller, nv, chunks)

    async def _authorize_registration(self, caller: Caller, nv: dm.NewVersion) -> None:
        """versions.register in the model's project; for a model `create_model` will
        create, models.create too, in the header's project."""
        if not caller.authenticated:
            return
        try:
            project = await self.access.project_of(nv.model)
        except ModelNotFound:
            if not nv.create_model:
                raise
            project = project_of(nv.project)
            caller.require(Permission.CREATE_MODEL, project)
        caller.require(Permission.REGISTER, project)

    async def _register(
        self, caller: Caller, nv: dm.NewVersion, chunks: AsyncIterator[bytes]
    ) -> tuple[dm.ModelVersion, bool]:
        dm.validate_new_version(nv)
        await self._authorize_registration(caller, nv)
        actor = caller.name
        if nv.create_model:
            model = await self.store.ensure_model(
                nv.model, nv.model_type, actor, project_of(nv.project), create_project=not caller.authenticated
            )
        else:
            model = await self.store.get_model(nv.model)
        if nv.request_id:
            existing = await self.store.find_by_request_id(nv.model, nv.request_id)
            if existing is not None:
                return existing, True

        with tracing.span("blobstore.write", {"modelreg.model": nv.model}) as span:
            upload = HashingUpload(await self.blobs.begin_upload(nv.declared_sha256))
            reader = OnnxReader() if nv.format == dm.ArtifactFormat.ONNX else None
            started = time.perf_counter()
            try:
                async for chunk in chunks:
                    if reader is not None:
                        reader.feed(chunk)
                    await upload.write(chunk)
                await upload.finish()
                self._check_upload(nv, upload)
                signature = self._signature(nv, reader)
            except BaseException:
                await upload.inner.abort()
                raise
            if span is not None:
                span.set_attribute("modelreg.bytes", upload.size)
        self.metrics.upload_seconds.labels(self.metrics.store).observe(time.perf_counter() - started)
        self.metrics.artifact_bytes.labels(self.metrics.store, "in").inc(upload.size)

        sha, size = upload.sha256, upload.size
        config = dm.merge_config(model.default_config, nv.config)
        model_type = nv.model_type or model.model_type

        async def finalize() -> None:
            with tracing.span("blobstore.commit"):
                try:
                    await upload.inner.commit(sha)
                except RegistryError:
                    raise
                except Exception as e:  # the store went away mid-commit
                    await upload.inner.abort()
                    raise Unavailable(
                        f"the artifact store failed while storing the bytes ({e}); retry the upload",
                        reason="ARTIFACT_STORE_UNAVAILABLE",
                    ) from e

        try:
            version = await self.store.register_version(nv, config, model_type, sha, size, actor, finalize, signature)
        except RequestIdTaken:
            # A concurrent call with the same request id won; return its version.
            await self._remove_if_unreferenced(sha)
            existing = await self.store.find_by_request_id(nv.model, nv.request_id)
            assert existing is not None
            return existing, True
        except BaseException:
            await upload.inner.abort()
            await self._remove_if_unreferenced(sha)
            raise
        log.info(
            "registered models/%s/versions/%d (sha256 %s, %d bytes)",
            version.model,
            version.version,
            sha,
            size,
            extra={"principal": actor},
        )
        return version, False

    @staticmethod
    def _signature(nv: dm.NewVersion, reader: OnnxReader | None) -> ds.Signature | None:
        """The version's signature: for ONNX the one read from the graph, which a signature
        the client sent must equal (else INVALID_ARGUMENT: a client that read the file
        differently is refused rather than silently overridden); otherwise the client's, as
        sent (source CLIENT), or None."""
        if reader is None:
            return nv.signature
        name = nv.filename or "the artifact"
        try:
            read = reader.finish()
        except NotOnnx as e:
            raise InvalidArgument(
                f"{name} is not an ONNX model: {e}; nothing was stored. Export the model to ONNX again, or register "
                "it with the format it has (--format ultralytics_pt, bundle or other)"
            ) from None
        if nv.signature is not None:
            differences = ds.disagreement(read, nv.signature)
            if differences:
                raise InvalidArgument(
                    f"header.signature disagrees with the ONNX graph of {name}: {'; '.join(differences)}; nothing "
                    "was stored. Leave the signature out (the registry reads it from the graph) or send the graph's"
                )
        return read

    @staticmethod
    def _check_upload(nv: dm.NewVersion, upload: HashingUpload) -> None:
        if upload.size == 0:
            raise InvalidArgument("the artifact is empty: send the file's bytes in `chunk` messages after the header")
        if nv.declared_size and nv.declared_size != upload.size:
            raise InvalidArgument(
                f"size mismatch: the header declared {nv.declared_size} bytes but {upload.size} arrived; "
                "nothing was stored, upload the whole file again"
            )
        if nv.declared_sha256 and nv.declared_sha256 != upload.sha256:
            raise InvalidArgument(
                f"sha256 mismatch: the header declared {nv.declared_sha256} but the bytes received hash to "
                f"{upload.sha256}; nothing was stored, check the file and upload it again"
            )

    # ------------------------------------------------------------------ deletion

    async def delete_model(self, caller: Caller, name: str) -> int:
        await self.access.require(caller, Permission.DELETE_MODEL, model=name)
        async with self.store.transaction() as conn:
            dm.check_deletable_model(await self.store.lock_model(conn, name))
            count, orphans = await self.store.delete_model(conn, name, caller.name)
        self.access.forget_models([name])
        for sha in orphans:
            await self._remove_if_unreferenced(sha)
        return count

    async def delete_version(self, caller: Caller, model: str, version: int) -> bool:
        await self.access.require(caller, Permission.DELETE_VERSION, model=model)
        async with self.store.transaction() as conn:
            await self.store.lock_model(conn, model)  # stage moves hold it: none can interleave
            v = await self.store.lock_version(conn, model, version)
            dd.check_deletable_version(await self.deployments.load(conn, model), version, v.stage)
            # An alias holds its version (set_alias takes the model lock too: no race).
            da.check_deletable(model, version, await aliases_of(conn, model, version))
            orphans = await self.store.delete_version(conn, v, caller.name)
        removed = False
        for sha in orphans:
            removed |= await self._remove_if_unreferenced(sha)
        return removed

    async def _remove_if_unreferenced(self, sha: str) -> bool:
        """Deletes a blob from the store if no version references it. Runs under the
        blob's advisory lock, which registration holds while it commits the same blob, so
        a blob that a concurrent registration is adopting is never removed."""
        async with self.store.blob_lock(sha) as referenced:
            if referenced:
                return False
            try:
                await self.blobs.delete(sha)
            except Unavailable as e:
                # The database change stands; the unreferenced blob only costs space.
                log.warning("could not remove unreferenced blob %s from the store: %s", sha, e.message)
                return False
            return True

    async def remove_stale_uploads(self, ttl: timedelta) -> int:
        """Removes uploads that never completed and are older than `ttl` (the janitor)."""
        return await self.blobs.remove_stale_uploads(ttl)

    # ------------------------------------------------------------------ download

    async def open_download(self, caller: Caller, ref: VersionRef, offset: int, chunk_size: int) -> Download:
        await self.access.require(caller, Permission.DOWNLOAD, model=ref.model)
        version = await self._resolve(ref)
        if offset < 0 or offset > version.size_bytes:
            raise InvalidArgument(
                f"offset {offset} is outside the artifact (0..{version.size_bytes} bytes); "
                "resume from the number of bytes you already have"
            )
        chunk_size = min(max(chunk_size or DEFAULT_CHUNK, 4096), MAX_CHUNK)
        stored = await self.blobs.size(version.sha256)
        if stored is None:
            raise DataLoss(
                f"the artifact of {ref} (sha256 {version.sha256}) is missing from the artifact store; "
                "restore it from backup or register the version again"
            )
        if stored != version.size_bytes:
            raise DataLoss(
                f"the stored artifact of {ref} is {stored} bytes but {version.size_bytes} were registered; "
                "the blob is corrupted, restore it from backup"
            )
        return Download(version, offset, self._verified_chunks(version, offset, chunk_size))

    async def _verified_chunks(self, version: dm.ModelVersion, offset: int, chunk_size: int) -> AsyncIterator[bytes]:
        """Yields the bytes from `offset`, hashing the whole blob on the way. If the digest
        does not match at the end, raises DataLoss so the stream ends with an error and the
        client discards what it got."""
        digest = hashlib.sha256()
        position = 0
        # The store reads and hashes in one worker-thread call per chunk (hashlib drops the
        # GIL on large buffers), so the event loop only moves bytes to gRPC. No read-ahead:
        # on a CPU-bound host it gained nothing, and holding several fresh 1 MiB buffers at
        # once makes glibc trim and re-fault its heap (see benchmarks/README.md, goal 11).
        chunks = self.blobs.read(version.sha256, 0, chunk_size, observe=digest.update)
        sent, started = self.metrics.artifact_bytes.labels(self.metrics.store, "out"), time.perf_counter()
        # Not the current span: it lives across the stream's yields (see tracing.start).
        span = tracing.start("blobstore.read", {"modelreg.bytes": version.size_bytes - offset})
        try:
            async for chunk in chunks:
                end = position + len(chunk)
                if end > offset:
                    yield chunk[max(0, offset - position) :] if position < offset else chunk
                    sent.inc(end - max(offset, position))
                position = end
        except FileNotFoundError:
            raise DataLoss(
                f"the artifact of models/{version.model}/versions/{version.version} vanished from the store "
                "during the download; restore it from backup"
            ) from None
        finally:
            if span is not None:
                span.end()
        self.metrics.download_seconds.labels(self.metrics.store).observe(time.perf_counter() - started)
        if digest.hexdigest() != version.sha256:
            raise DataLoss(
                f"the stored artifact of models/{version.model}/versions/{version.version} is corrupted "
                f"(sha256 {digest.hexdigest()} instead of {version.sha256}); discard what you received "
                "and restore the blob from backup"
            )

    async def presign(self, caller: Caller, ref: VersionRef, expires: timedelta) -> tuple[dm.ModelVersion, str]:
        await self.access.require(caller, Permission.DOWNLOAD, model=ref.model)
        version = await self._resolve(ref)
        url = await self.blobs.presign_get(version.sha256, expires, version.download_filename)
        return version, url

    # ------------------------------------------------------------------ reads

    async def resolve(self, caller: Caller, ref: VersionRef) -> dm.ModelVersion:
        """A version by number or alias, from the hot cache when it holds it."""
        await self.access.require(caller, Permission.READ, model=ref.model)
        return await self._resolve(ref)

    async def version_of(self, ref: VersionRef) -> dm.ModelVersion:
        """A version by number or alias, for a use case that has authorized the caller."""
        return await self._resolve(ref)

    async def _resolve(self, ref: VersionRef) -> dm.ModelVersion:
        key: int | str = ref.number if ref.number is not None else (ref.alias or "latest")
        cached = self.cache.get(ref.model, key)
        if cached is not None:
            return cached
        generation = self.cache.generation(ref.model)
        version = await self.store.get_version(ref.model, key)
        self.cache.put(ref.model, key, version, generation)
        return version

    async def compare(self, caller: Caller, model: str, numbers: list[int]) -> dm.Comparison:
        await self.access.require(caller, Permission.READ, model=model)
        m = await self.store.get_model(model)
        if numbers:
            found = {v.version: v for v in await self.store.get_versions(model, numbers)}
            missing = [n for n in numbers if n not in found]
            if missing:
                raise InvalidArgument(
                    f"models/{model} has no version(s) {', '.join(map(str, missing))}; "
                    f"list versions with 'modelreg list {model}'"
                )
            versions = [found[n] for n in numbers]
        else:
            versions = await self.store.list_versions(model, None, 2**62, 1000)
        production = None
        if m.production_version:
            production = next((v for v in versions if v.version == m.production_version), None)
            if production is None:
                production = await self.store.get_version(model, m.production_version)
        return dm.compare(versions, production)

    async def list_versions(
        self, caller: Caller, model: str, stage: Stage | None, before: int, limit: int
    ) -> list[dm.ModelVersion]:
        await self.access.require(caller, Permission.READ, model=model)
        return await self.store.list_versions(model, stage, before, limit)

    async def update_model(self, caller: Caller, name: str, changes: dict[str, Any]) -> dm.Model:
        await self.access.require(caller, Permission.UPDATE_MODEL, model=name)
        if "tags" in changes:
            dm.validate_tags(changes["tags"], "model.tags")
        return await self.store.update_model(name, changes, caller.name)

    async def update_version(self, caller: Caller, ref: VersionRef, changes: dict[str, Any]) -> dm.ModelVersion:
        await self.access.require(caller, Permission.UPDATE_VERSION, model=ref.model)
        if "tags" in changes:
            dm.validate_tags(changes["tags"], "model_version.tags")
        version = await self._resolve(ref)
        return await self.store.update_version(ref.model, version.version, changes, caller.name)
