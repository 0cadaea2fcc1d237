"""A small synchronous client for an agent's inference API (the app side of the sidecar).

from modelreg.inference import InferenceClient
agent = InferenceClient("127.0.0.1:50052")          # or "unix:/run/modelreg/agent.sock"
r = agent.predict("fraud", {"x": np.ones((1, 4), np.float32)})
r.model_version, r.outputs["y"]
d = agent.detect("detector", open("street.jpg", "rb").read())
for box in d.detections: box.class_name, box.confidence, box.xyxy

An agent started with --tls-cert/--tls-key serves TLS: pass the CA that signed its
certificate, and with --tls-client-ca a client certificate too (mTLS):

agent = InferenceClient("node-7:50052", ca_cert="ca.pem", client_cert="app.pem", client_key="app-key.pem")

The keywords win over MODELREG_AGENT_CA_CERT, MODELREG_AGENT_CLIENT_CERT and
MODELREG_AGENT_CLIENT_KEY. These are the AGENT's: MODELREG_CA_CERT and friends are the
registry's, and a node may well reach a TLS registry and a plaintext agent on localhost.
No bearer token is sent: the inference port authenticates with certificates only, and the
registry's token stays with the registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelreg import errors, tracing
from modelreg.credentials import ConfigError, Credentials, sync_channel
from modelreg.tensors import add_tensor, tensor_to_array
from modelreg.v1 import agent_service_pb2 as ag
from modelreg.v1 import inference_service_pb2 as inf
from modelreg.v1 import inference_service_pb2_grpc as inf_grpc

MAX_MESSAGE = 64 * 1024 * 1024


@dataclass
class PredictResult:
    model_version: str
    outputs: dict[str, np.ndarray]


@dataclass
class Box:
    class_id: int
    class_name: str
    confidence: float
    xyxy: tuple[float, float, float, float]


@dataclass
class DetectResult:
    model_version: str
    detections: list[Box]
    image_width: int
    image_height: int


def _model(name: str) -> str:
    return name if name.startswith("models/") else f"models/{name}"


def agent_credentials(
    ca_cert: str | os.PathLike | None = None,
    client_cert: str | os.PathLike | None = None,
    client_key: str | os.PathLike | None = None,
) -> Credentials:
    """TLS to an agent's inference port: the arguments, else MODELREG_AGENT_CA_CERT,
    MODELREG_AGENT_CLIENT_CERT and MODELREG_AGENT_CLIENT_KEY; none of them: plaintext."""
    env = os.environ

    def path(value: str | os.PathLike | None, keyword: str, variable: str) -> Path | None:
        chosen = value if value not in (None, "") else env.get(variable) or None
        if chosen is None:
            return None
        p = Path(chosen)
        if not os.access(p, os.R_OK):  # say which setting, in the agent's names
            raise ConfigError(f"cannot read {str(p)!r}: fix {keyword}= (or {variable})")
        return p

    ca = path(ca_cert, "ca_cert", "MODELREG_AGENT_CA_CERT")
    cert = path(client_cert, "client_cert", "MODELREG_AGENT_CLIENT_CERT")
    key = path(client_key, "client_key", "MODELREG_AGENT_CLIENT_KEY")
    if (cert is None) != (key is None):
        raise ConfigError(
            "a client certificate needs its key: pass client_cert= and client_key= together "
            "(or MODELREG_AGENT_CLIENT_CERT and MODELREG_AGENT_CLIENT_KEY)"
        )
    return Credentials(ca_cert=ca, client_cert=cert, client_key=key)


class InferenceClient:
    def __init__(
        self,
        address: str = "127.0.0.1:50052",
        *,
        timeout: float | None = 30.0,
        ca_cert: str | os.PathLike | None = None,
        client_cert: str | os.PathLike | None = None,
        client_key: str | os.PathLike | None = None,
    ):
        self.address = address
        self.timeout = timeout
        self.credentials = agent_credentials(ca_cert, client_cert, client_key)
        # With opentelemetry installed, calls carry the app's trace context (modelreg.tracing).
        self.channel = tracing.traced(
            sync_channel(
                address,
                self.credentials,
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE),
                    ("grpc.max_send_message_length", MAX_MESSAGE),
                ],
                keepalive=False,  # short calls to a local agent, whose server keeps gRPC's ping limits
            )
        )
        self.stub = inf_grpc.InferenceServiceStub(self.channel)
        # Any: typeshed's HealthStub declares no methods (types-grpcio-health-checking).
        self.health: Any = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    def predict(
        self, model: str, inputs: dict[str, np.ndarray], *, output_names: list[str] | None = None, routing_key: str = ""
    ) -> PredictResult:
        req = inf.PredictRequest(model=_model(model), output_names=output_names or [], routing_key=routing_key)
        for k, v in inputs.items():
            add_tensor(req.inputs, k, np.asarray(v))
        resp = self._call(self.stub.Predict, req)
        return PredictResult(resp.model_version, {t.name: tensor_to_array(t) for t in resp.outputs})

    def detect(
        self,
        model: str,
        image: bytes,
        *,
        confidence: float = 0.0,
        iou: float = 0.0,
        max_detections: int = 0,
        routing_key: str = "",
    ) -> DetectResult:
        req = inf.DetectRequest(
            model=_model(model),
            image=image,
            confidence_threshold=confidence,
            iou_threshold=iou,
            max_detections=max_detections,
            routing_key=routing_key,
        )
        resp = self._call(self.stub.Detect, req)
        return DetectResult(
            resp.model_version,
            [Box(d.class_id, d.class_name, d.confidence, (d.x1, d.y1, d.x2, d.y2)) for d in resp.detections],
            resp.image_width,
            resp.image_height,
        )

    def serving_status(self, models: list[str] | None = None) -> ag.Agent:
        """What the agent serves now (`modelreg.v1.Agent`)."""
        req = inf.GetServingStatusRequest(models=[_model(m) for m in models or []])
        return self._call(self.stub.GetServingStatus, req).agent

    def is_serving(self) -> bool:
        try:
            resp = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=self.timeout)
        except grpc.RpcError:
            return False
        return resp.status == health_pb2.HealthCheckResponse.SERVING
