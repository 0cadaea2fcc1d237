"""The JSON API under /api/v1/: the gRPC JSON mapping of the same use cases.

Each endpoint answers exactly what grpcurl prints for its RPC (the response message, with
the proto's JSON names and defaults left out): GET /api/v1/models is ListModels,
/models/{model} GetModel, /models/{model}/versions ListModelVersions (`page_size`,
`page_token`, `stage`), /models/{model}/versions/{version} GetModelVersion (a number or an
alias), /models/{model}/deployment GetDeployment. Paging is the gRPC calls' (default 50,
maximum 1000, an opaque `nextPageToken`, empty at the end). Errors are `errors.HttpError`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelreg.v1 import deployment_service_pb2 as ds
from modelreg.v1 import registry_service_pb2 as rs
from registry_server.console.session import caller_of
from registry_server.domain import models as dm
from registry_server.domain.names import VersionRef, parse_model_name, parse_version_ref
from registry_server.domain.stages import parse_stage
from registry_server.errors import InvalidArgument
from registry_server.read_cache import ObjectMemo
from registry_server.services import convert as cv

JSON = "application/json"
MAX_MEMO = 10_000


def proto_json(message: Message) -> bytes:
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()


def json_response(message: Message) -> Response:
    return Response(proto_json(message), media_type=JSON)


def int_param(request: Request, name: str) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be a whole number, not {raw!r}") from None


def model_param(request: Request) -> str:
    return parse_model_name(request.path_params["model"], "model")


def version_ref(request: Request) -> VersionRef:
    model = model_param(request)
    ref = parse_version_ref(request.path_params["version"])
    return VersionRef(model, number=ref) if isinstance(ref, int) else VersionRef(model, alias=ref)


async def list_models(request: Request) -> Response:
    uc = request.app.state.use_cases
    size = cv.page_size(int_param(request, "page_size"))
    after = cv.decode_token("models", request.query_params.get("page_token", "")) or ""
    project = request.query_params.get("project", "")
    models = await uc.models.list_models(await caller_of(request), after, size + 1, project)
    token = cv.encode_token("models", models[size - 1].name) if len(models) > size else ""
    return json_response(
        rs.ListModelsResponse(models=[cv.model_to_proto(m) for m in models[:size]], next_page_token=token)
    )


async def get_model(request: Request) -> Response:
    uc = request.app.state.use_cases
    model = await uc.models.get_model(await caller_of(request), model_param(request))
    return json_response(rs.GetModelResponse(model=cv.model_to_proto(model)))


async def list_versions(request: Request) -> Response:
    uc = request.app.state.use_cases
    model = model_param(request)
    size = cv.page_size(int_param(request, "page_size"))
    before = cv.decode_int_token("versions", request.query_params.get("page_token", ""), 2**62)
    stage_text = request.query_params.get("stage", "")
    stage = parse_stage(stage_text) if stage_text else None
    caller = await caller_of(request)
    versions = await uc.models.list_versions(caller, model, stage, before, size + 1)  # 404 for an unknown model
    token = cv.encode_token("versions", versions[size - 1].version) if len(versions) > size else ""
    return json_response(
        rs.ListModelVersionsResponse(
            model_versions=[cv.version_to_proto(v) for v in versions[:size]], next_page_token=token
        )
    )


class VersionJson:
    """GET of one version. Its JSON is built once per cached version object (a weak
    `ObjectMemo`), as RegistryServicer memoizes its responses."""

    def __init__(self) -> None:
        self._memo: ObjectMemo[dm.ModelVersion, bytes] = ObjectMemo(MAX_MEMO)

    async def get(self, request: Request) -> Response:
        uc = request.app.state.use_cases
        version = await uc.models.resolve(await caller_of(request), version_ref(request))
        return Response(self._memo.get(version, _version_json), media_type=JSON)


def _version_json(version: dm.ModelVersion) -> bytes:
    return proto_json(rs.GetModelVersionResponse(model_version=cv.version_to_proto(version)))


async def get_deployment(request: Request) -> Response:
    uc = request.app.state.use_cases
    d = await uc.deployments.get(await caller_of(request), model_param(request))  # ModelNotFound: 404
    return json_response(ds.GetDeploymentResponse(deployment=cv.deployment_to_proto(d)))


def routes() -> list[Route]:
    endpoint = Callable[[Request], Awaitable[Response]]
    table: list[tuple[str, endpoint]] = [
        ("/api/v1/models", list_models),
        ("/api/v1/models/{model}", get_model),
        ("/api/v1/models/{model}/versions", list_versions),
        ("/api/v1/models/{model}/versions/{version}", VersionJson().get),
        ("/api/v1/models/{model}/deployment", get_deployment),
    ]
    return [Route(path, fn, methods=["GET"]) for path, fn in table]
