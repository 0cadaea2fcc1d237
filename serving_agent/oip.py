"""The Open Inference Protocol (KServe v2 / Triton's `inference.GRPCInferenceService`) on the
agent's inference port, so stock clients (tritonclient, KServe's InferenceGRPCClient, Seldon's
tools) work unchanged. A thin servicer: proto <-> arrays, then the agent's one tensor path
(`Agent.predict`: route, lease, check against the signature, run), the same as Predict's.

Routing:
- `model_name` is the registry model (`fraud` or `models/fraud`);
- an empty `model_version` follows the deployment: the canary by its weight, sticky per the
  request parameter `routing_key` (a string_param, or an int64/uint64 one);
- `model_version` "3" pins version 3 if it is loaded here, else NOT_FOUND naming what is;
- the response's `model_version` is the number of the version that answered.
"""

from __future__ import annotations

from importlib import metadata

import numpy as np

from modelreg.oip import grpc_predict_v2_pb2 as pb
from modelreg.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from serving_agent.agent import Agent, model_id
from serving_agent.errors import BadInput, agent_errors
from serving_agent.oip_tensors import decode_inputs, encode_outputs
from serving_agent.signature import TensorSpec, datatype

ROUTING_KEY = "routing_key"  # the request parameter that carries the sticky routing key
SERVER_NAME = "modelreg-agent"


def parse_version(text: str) -> int:
    """'' -> 0 (follow the deployment); '3' -> 3; anything else is INVALID_ARGUMENT."""
    text = text.strip()
    if not text:
        return 0
    if not text.isdigit() or int(text) < 1:
        raise BadInput(
            f"model_version {text!r} is not a version number; send one like '3' to pin it, "
            "or leave it empty to follow the deployment"
        )
    return int(text)


def routing_key(request: pb.ModelInferRequest) -> str:
    p = request.parameters.get(ROUTING_KEY)
    if p is None:
        return ""
    kind = p.WhichOneof("parameter_choice")
    if kind == "string_param":
        return p.string_param
    if kind in ("int64_param", "uint64_param"):
        return str(getattr(p, kind))
    raise BadInput(f"parameter {ROUTING_KEY!r} must be a string (or integer) parameter, got {kind or 'none'}")


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=datatype(spec.dtype), shape=list(spec.shape) if spec.shape is not None else [-1]
    )


def _version() -> str:
    try:
        return metadata.version("modelreg")
    except metadata.PackageNotFoundError:
        return "0"


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, agent: Agent):
        self.agent = agent
        self.server_version = _version()

    async def ServerLive(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:
        """Ready once every followed model has a version loaded (as grpc.health.v1's SERVING)."""
        return pb.ServerReadyResponse(ready=self.agent.ready)

    @agent_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        """False, not an error, for a model this agent does not follow or a version not loaded:
        a readiness probe's answer is yes or no."""
        version = parse_version(request.version)
        if model_id(request.name) not in self.agent.models:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=bool(self.agent.loaded_versions(request.name, version)))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.server_version, extensions=[])

    @agent_errors
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:
        """The signature of the version a request would reach (the stable one while a canary
        runs), or of the pinned version; `versions` lists every version loaded here."""
        # routed as ModelInfer routes, with its errors: NOT_FOUND for a model not followed or a
        # pinned version not loaded (naming the loaded ones), UNAVAILABLE while none is loaded
        sig = self.agent.signature(request.name, parse_version(request.version))
        loaded = self.agent.loaded_versions(request.name)
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=[str(v) for v in loaded],
            platform=sig.platform,
            inputs=[_tensor_metadata(t) for t in sig.inputs],
            outputs=[_tensor_metadata(t) for t in sig.outputs],
        )

    @agent_errors
    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        version = parse_version(request.model_version)
        inputs: dict[str, np.ndarray] = decode_inputs(request)
        result = await self.agent.predict(
            request.model_name,
            inputs,
            [o.name for o in request.outputs] or None,
            routing_key=routing_key(request),
            version=version,
        )
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=str(result.version), id=request.id
        )
        typed = bool(request.inputs) and not len(request.raw_input_contents)
        encode_outputs(response, result.outputs, raw=not typed)
        return response
