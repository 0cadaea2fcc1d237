"""RegistryService: proto in, use case, proto out. No rules here."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res
from registry_server.domain import models as dm
from registry_server.domain.names import parse_model_name, parse_version_name
from registry_server.errors import InvalidArgument
from registry_server.read_cache import ObjectMemo
from registry_server.services import convert as cv
from registry_server.services.auth import caller_of
from registry_server.services.gates import request_to_proto
from registry_server.usecases.deployments import Deployments
from registry_server.usecases.models import Models

MODEL_MASK_FIELDS = ("description", "tags", "default_config", "model_type")
VERSION_MASK_FIELDS = ("description", "tags")
MAX_URL_EXPIRY = 7 * 24 * 3600
#: How long an upload without a declared size waits after its last chunk for a cancellation.
CANCEL_GRACE_S = 0.05
MAX_MEMO_RESPONSES = 10_000


def _version_response(version: dm.ModelVersion) -> rs.GetModelVersionResponse:
    return rs.GetModelVersionResponse(model_version=cv.version_to_proto(version))


class RegistryServicer(rs_grpc.RegistryServiceServicer):
    def __init__(self, models: Models, deployments: Deployments):
        self.models = models
        self.deployments = deployments
        # GetModelVersion answers built once per cached version object, held weakly (ObjectMemo).
        self._responses: ObjectMemo[dm.ModelVersion, rs.GetModelVersionResponse] = ObjectMemo(MAX_MEMO_RESPONSES)

    # ------------------------------------------------------------------ models

    async def CreateModel(self, request: rs.CreateModelRequest, context) -> rs.CreateModelResponse:
        m = request.model
        model = dm.Model(
            name=parse_model_name(m.name, "model.name"),
            description=m.description,
            project=m.project,
            model_type=m.model_type,
            default_config=cv.from_struct(m.default_config, "model.default_config"),
            tags=dict(m.tags),
        )
        created = await self.models.create_model(caller_of(context), model)
        return rs.CreateModelResponse(model=cv.model_to_proto(created))

    async def GetModel(self, request: rs.GetModelRequest, context) -> rs.GetModelResponse:
        model = await self.models.get_model(caller_of(context), parse_model_name(request.name))
        return rs.GetModelResponse(model=cv.model_to_proto(model))

    async def ListModels(self, request: rs.ListModelsRequest, context) -> rs.ListModelsResponse:
        size = cv.page_size(request.page_size)
        after = cv.decode_token("models", request.page_token) or ""
        models = await self.models.list_models(caller_of(context), after, size + 1, request.project)
        token = cv.encode_token("models", models[size - 1].name) if len(models) > size else ""
        return rs.ListModelsResponse(models=[cv.model_to_proto(m) for m in models[:size]], next_page_token=token)

    async def UpdateModel(self, request: rs.UpdateModelRequest, context) -> rs.UpdateModelResponse:
        name = parse_model_name(request.model.name, "model.name")
        paths = list(request.update_mask.paths)
        for p in paths:
            if p not in MODEL_MASK_FIELDS:
                raise InvalidArgument(
                    f"update_mask path {p!r} cannot be updated; use any of {', '.join(MODEL_MASK_FIELDS)}"
                )
        m = request.model
        if not paths:
            paths = [f for f in MODEL_MASK_FIELDS if _is_set(m, f)]
        if not paths:
            raise InvalidArgument("nothing to update: set description, tags, default_config or model_type")
        values = {
            "description": m.description,
            "tags": dict(m.tags),
            "default_config": cv.from_struct(m.default_config, "model.default_config"),
            "model_type": m.model_type,
        }
        updated = await self.models.update_model(caller_of(context), name, {p: values[p] for p in paths})
        return rs.UpdateModelResponse(model=cv.model_to_proto(updated))

    async def DeleteModel(self, request: rs.DeleteModelRequest, context) -> rs.DeleteModelResponse:
        count = await self.models.delete_model(caller_of(context), parse_model_name(request.name))
        return rs.DeleteModelResponse(deleted_versions=count)

    # ------------------------------------------------------------------ versions

    async def RegisterModelVersion(self, request_iterator, context) -> rs.RegisterModelVersionResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidArgument("the first message must carry `header` with the version's metadata")
        header = first.header
        nv = cv.new_version_from_header(header, parse_model_name(header.parent, "header.parent"))

        async def chunks():
            async for msg in request_iterator:
                if msg.WhichOneof("payload") != "chunk":
                    raise InvalidArgument("only the first message may carry `header`; send the bytes as `chunk`")
                yield msg.chunk
            if not nv.declared_size:
                # A client that cancels mid-stream also ends the request stream here; grpc.aio
                # injects the cancellation a moment later. Without a declared size (the SDK
                # always declares it) nothing else tells a cut stream from a whole one, so
                # give the cancellation that moment before the bytes become a version.
                await asyncio.sleep(CANCEL_GRACE_S)

        version, dedup = await self.models.register(caller_of(context), nv, chunks())
        return rs.RegisterModelVersionResponse(model_version=cv.version_to_proto(version), deduplicated=dedup)

    async def GetModelVersion(self, request: rs.GetModelVersionRequest, context) -> rs.GetModelVersionResponse:
        version = await self.models.resolve(caller_of(context), parse_version_name(request.name))
        return self._responses.get(version, _version_response)

    async def ListModelVersions(self, request: rs.ListModelVersionsRequest, context) -> rs.ListModelVersionsResponse:
        model = parse_model_name(request.parent, "parent")
        size = cv.page_size(request.page_size)
        before = cv.decode_int_token("versions", request.page_token, 2**62)
        stage = cv.stage_from_proto(request.stage) if request.stage else None
        versions = await self.models.list_versions(caller_of(context), model, stage, before, size + 1)
        token = cv.encode_token("versions", versions[size - 1].version) if len(versions) > size else ""
        return rs.ListModelVersionsResponse(
            model_versions=[cv.version_to_proto(v) for v in versions[:size]], next_page_token=token
        )

    async def UpdateModelVersion(self, request: rs.UpdateModelVersionRequest, context) -> rs.UpdateModelVersionResponse:
        ref = parse_version_name(request.model_version.name, "model_version.name")
        paths = list(request.update_mask.paths) or list(VERSION_MASK_FIELDS)
        for p in paths:
            if p not in VERSION_MASK_FIELDS:
                raise InvalidArgument(
                    f"update_mask path {p!r} cannot be updated: a version is immutable apart from "
                    "description and tags; register a new version to change anything else"
                )
        mv = request.model_version
        values = {"description": mv.description, "tags": dict(mv.tags)}
        updated = await self.models.update_version(caller_of(context), ref, {p: values[p] for p in paths})
        return rs.UpdateModelVersionResponse(model_version=cv.version_to_proto(updated))

    async def DeleteModelVersion(self, request: rs.DeleteModelVersionRequest, context) -> rs.DeleteModelVersionResponse:
        ref = parse_version_name(request.name)
        if ref.number is None:
            raise InvalidArgument("delete a version by number, not by alias: 'models/{model}/versions/{n}'")
        removed = await self.models.delete_version(caller_of(context), ref.model, ref.number)
        return rs.DeleteModelVersionResponse(blob_deleted=removed)

    # ------------------------------------------------------------------ stages

    async def PromoteModelVersion(
        self, request: rs.PromoteModelVersionRequest, context
    ) -> rs.PromoteModelVersionResponse:
        ref = parse_version_name(request.name)
        if request.stage == res.STAGE_UNSPECIFIED:
            raise InvalidArgument("'stage' is required: STAGE_STAGING, STAGE_PRODUCTION or STAGE_ARCHIVED")
        stage = cv.stage_from_proto(request.stage)
        p = await self.deployments.promote(caller_of(context), ref, stage, request.reason)
        return rs.PromoteModelVersionResponse(
            model_version=cv.version_to_proto(p.version),
            archived_version=cv.version_to_proto(p.archived) if p.archived else None,
            sequence=p.sequence,
            promotion_request=request_to_proto(p.request) if p.request else None,
        )

    async def ListStageTransitions(
        self, request: rs.ListStageTransitionsRequest, context
    ) -> rs.ListStageTransitionsResponse:
        model = parse_model_name(request.parent, "parent")
        size = cv.page_size(request.page_size)
        before = cv.decode_int_token("transitions", request.page_token, 2**62)
        rows = await self.deployments.transitions(caller_of(context), model, before, size + 1)
        token = cv.encode_token("transitions", rows[size - 1][0]) if len(rows) > size else ""
        return rs.ListStageTransitionsResponse(
            transitions=[cv.transition_to_proto(t) for _, t in rows[:size]], next_page_token=token
        )

    async def CompareModelVersions(
        self, request: rs.CompareModelVersionsRequest, context
    ) -> rs.CompareModelVersionsResponse:
        model = parse_model_name(request.parent, "parent")
        for n in request.versions:
            if n < 1:
                raise InvalidArgument(f"versions must be positive numbers; got {n}")
        comparison = await self.models.compare(caller_of(context), model, list(request.versions))
        return cv.comparison_to_proto(comparison)

    # ------------------------------------------------------------------ artifacts

    async def DownloadArtifact(self, request: rs.DownloadArtifactRequest, context):
        ref = parse_version_name(request.name)
        if request.chunk_size < 0:
            raise InvalidArgument("chunk_size must not be negative; 0 means 1 MiB")
        dl = await self.models.open_download(caller_of(context), ref, request.offset, request.chunk_size)
        v = dl.version
        yield rs.DownloadArtifactResponse(
            header=rs.DownloadArtifactHeader(
                model_version=f"models/{v.model}/versions/{v.version}",
                filename=v.download_filename,
                size_bytes=v.size_bytes,
                sha256=v.sha256,
                offset=dl.offset,
                format=cv.FORMAT_TO_PROTO[v.format],
            )
        )
        async for chunk in dl.chunks:
            yield rs.DownloadArtifactResponse(chunk=chunk)

    async def GetArtifactUrl(self, request: rs.GetArtifactUrlRequest, context) -> rs.GetArtifactUrlResponse:
        ref = parse_version_name(request.name)
        seconds = request.expires_in_seconds or 3600
        if seconds < 1 or seconds > MAX_URL_EXPIRY:
            raise InvalidArgument(f"expires_in_seconds must be 1..{MAX_URL_EXPIRY} (7 days); 0 means 3600")
        version, url = await self.models.presign(caller_of(context), ref, timedelta(seconds=seconds))
        return rs.GetArtifactUrlResponse(
            url=url,
            expire_time=cv.ts(datetime.now(UTC) + timedelta(seconds=seconds)),
            sha256=version.sha256,
            size_bytes=version.size_bytes,
            model_version=f"models/{version.model}/versions/{version.version}",
            filename=version.download_filename,
        )


def _is_set(m: res.Model, field: str) -> bool:
    if field in ("tags",):
        return len(m.tags) > 0
    if field == "default_config":
        return m.HasField("default_config")
    return bool(getattr(m, field))
