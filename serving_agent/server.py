"""The inference gRPC server around an `Agent`: InferenceService, the Open Inference Protocol's
inference.GRPCInferenceService (serving_agent.oip), grpc.health.v1 (SERVING only once every
followed model has a version loaded), reflection, and the metrics port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from modelreg.oip import grpc_predict_v2_pb2 as oip_pb
from modelreg.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from modelreg.tensors import add_tensor, tensor_to_array, unique_names
from modelreg.v1 import inference_service_pb2 as inf
from modelreg.v1 import inference_service_pb2_grpc as inf_grpc
from modelreg_runtime import tracing
from modelreg_runtime.metrics_http import MetricsServer
from modelreg_runtime.process import keep_freed_memory
from serving_agent.agent import MAX_MESSAGE, Agent, AgentConfig
from serving_agent.errors import BadInput, StartupError, agent_errors
from serving_agent.oip import OipServicer
from serving_agent.security import InferenceTLS

# The agent process keeps blocks up to 32 MiB in the heap and 128 MiB free at its top
# (see modelreg_runtime.process.keep_freed_memory): image-sized tensors in and out of every Predict.
AGENT_MALLOC = {"mmap_threshold": 32 << 20, "trim_threshold": 128 << 20}

log = logging.getLogger("modelreg.agent.server")

SERVICE_NAME = inf.DESCRIPTOR.services_by_name["InferenceService"].full_name
OIP_SERVICE_NAME = oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class InferenceServicer(inf_grpc.InferenceServiceServicer):
    def __init__(self, agent: Agent):
        self.agent = agent

    @agent_errors
    async def Predict(self, request: inf.PredictRequest, context) -> inf.PredictResponse:
        unique_names([t.name for t in request.inputs], BadInput)
        inputs = {t.name: tensor_to_array(t) for t in request.inputs}
        result = await self.agent.predict(
            request.model, inputs, list(request.output_names) or None, routing_key=request.routing_key
        )
        response = inf.PredictResponse(model_version=result.model_version)
        for k, v in result.outputs.items():
            add_tensor(response.outputs, k, v)
        return response

    @agent_errors
    async def Detect(self, request: inf.DetectRequest, context) -> inf.DetectResponse:
        conf = request.confidence_threshold or 0.25
        iou = request.iou_threshold or 0.7
        if not 0 <= conf <= 1 or not 0 <= iou <= 1:
            raise BadInput("confidence_threshold and iou_threshold must be between 0 and 1")
        if request.max_detections < 0:
            raise BadInput("max_detections must not be negative; 0 means 300")
        result = await self.agent.detect(
            request.model,
            request.image,
            confidence=conf,
            iou=iou,
            max_detections=request.max_detections or 300,
            routing_key=request.routing_key,
        )
        d = result.detections
        return inf.DetectResponse(
            model_version=result.model_version,
            image_width=d.width,
            image_height=d.height,
            detections=[
                inf.Detection(
                    class_id=b.class_id,
                    class_name=b.class_name,
                    confidence=b.confidence,
                    x1=b.xyxy[0],
                    y1=b.xyxy[1],
                    x2=b.xyxy[2],
                    y2=b.xyxy[3],
                )
                for b in d.boxes
            ],
        )

    @agent_errors
    async def GetServingStatus(self, request: inf.GetServingStatusRequest, context) -> inf.GetServingStatusResponse:
        for m in request.models:
            self.agent._manager(m)  # NOT_FOUND for a model the agent does not follow
        return inf.GetServingStatusResponse(agent=self.agent.status(list(request.models) or None))


def listen_address(listen: str, uds: str) -> str:
    return f"unix:{uds}" if uds else listen


async def serve(
    config: AgentConfig,
    listen: str,
    metrics: tuple[str, int] | None,
    ready_line: bool = True,
    metrics_optional: bool = False,
    tls: InferenceTLS | None = None,
) -> None:
    """Runs an agent with its inference server until SIGTERM/SIGINT. `metrics` is the
    (host, port) of /metrics, None for none; a busy metrics address ends the process unless
    `metrics_optional` (the default address: a second agent on the host runs without).
    With `tls` the inference port speaks only TLS (mTLS with its client CA): a plaintext
    client's connection fails its handshake, it is never served."""
    server_credentials = tls.server_credentials() if tls is not None else None  # files read before binding
    keep_freed_memory(**AGENT_MALLOC)
    agent = Agent(config)
    server = grpc.aio.server(
        interceptors=tracing.server_interceptors(),  # none unless tracing is on
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ],
    )
    inf_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(agent), server)
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(OipServicer(agent), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            OIP_SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        if server_credentials is not None:
            port = server.add_secure_port(listen, server_credentials)
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError:  # grpc raises instead of returning 0 for an address in use
        port = 0
    if port == 0 and not listen.startswith("unix:"):
        raise StartupError(f"cannot listen on {listen}: the address is in use or invalid; set --listen to a free one")
    if not listen.startswith("unix:") and listen.endswith(":0"):
        listen = f"{listen.rsplit(':', 1)[0]}:{port}"

    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task] = set()
    closing = False  # set on SIGTERM: every name reports NOT_SERVING from then on

    async def set_health(ready: bool) -> None:
        """ "" and InferenceService: every followed model has a version loaded. Each model's
        own name (as --model gives it, without `models/` or `@alias`): that model has one."""

        def status(up: bool) -> int:
            # `closing` read at each name: a change that arrives during shutdown (or a call
            # begun before it) never flips a name back to SERVING
            return (
                health_pb2.HealthCheckResponse.SERVING
                if up and not closing
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )

        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, status(ready))
        for name, mgr in agent.models.items():
            await health_servicer.set(name, status(bool(mgr.ready())))

    def on_ready(ready: bool) -> None:
        t = loop.create_task(set_health(ready))
        pending.add(t)
        t.add_done_callback(pending.discard)

    agent.config = _with_address(config, listen)
    agent.add_listener(on_ready)
    # First, so a metrics address that cannot be bound stops the agent before anything runs.
    metrics_server = None
    if metrics is not None:
        try:
            metrics_server = await MetricsServer(agent.metrics.render, *metrics).start()
        except OSError as e:
            message = f"cannot serve metrics on {metrics[0]}:{metrics[1]}: {e.strerror or e}"
            if not metrics_optional:
                raise StartupError(f"{message}; set --metrics-listen to a free host:port, or 'off'") from None
            log.warning("%s; running without metrics (set --metrics-listen to a free host:port)", message)
    await set_health(False)
    await server.start()
    await agent.start()
    if ready_line:
        width = max(len(k) for k, _ in agent.config.describe())
        lines = ["modelreg serving agent", "settings:"]
        lines += [f"  {k.ljust(width)}  {v}" for k, v in agent.config.describe()]
        transport = tls.describe() if tls is not None else "plaintext"
        services = "InferenceService, inference.GRPCInferenceService, grpc.health.v1, reflection"
        lines.append(f"inference API on {listen} over {transport} ({services})")
        if metrics_server is not None:
            lines.append(f"metrics on {metrics_server.url}")
        print("\n".join(lines), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("shutting down", file=sys.stderr, flush=True)
    closing = True
    await set_health(False)
    await server.stop(2)
    if metrics_server is not None:
        await metrics_server.close()
    await agent.stop()
    with contextlib.suppress(Exception):
        await asyncio.gather(*pending)


def _with_address(config: AgentConfig, address: str) -> AgentConfig:
    from dataclasses import replace

    return replace(config, address=address)
