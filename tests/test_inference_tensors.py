"""The tensor codec (`modelreg.tensors`) shared by the app's InferenceClient and the agent:
a tensor the wire format cannot carry is refused on the client, and malformed bytes sent to the
agent are INVALID_ARGUMENT naming the tensor, before any model is involved.

The agent here is a real InferenceService on a real gRPC server on 127.0.0.1 port 0; it is not
started (no registry), which is enough: tensors are decoded before a model is looked up.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from modelreg import errors
from modelreg.tensors import TensorError, add_tensor
from modelreg.v1 import inference_service_pb2 as inf
from modelreg.v1 import inference_service_pb2_grpc as inf_grpc


@pytest.fixture
async def agent_address(tmp_path):
    from serving_agent.agent import Agent, AgentConfig
    from serving_agent.server import InferenceServicer

    agent = Agent(AgentConfig(registry="127.0.0.1:1", models=("m",), cache_dir=tmp_path))
    server = grpc.aio.server()
    inf_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(agent), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


def test_a_dtype_the_wire_cannot_carry_is_refused_on_the_client():
    with pytest.raises(TensorError, match=r"tensor 'x' has dtype complex64") as e:
        add_tensor(inf.PredictRequest().inputs, "x", np.ones(2, np.complex64))
    assert isinstance(e.value, errors.InvalidArgument) and e.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (inf.Tensor(name="x", shape=[1], data=bytes(4)), "tensor 'x' needs a dtype"),
        (inf.Tensor(name="x", dtype=inf.DATA_TYPE_FLOAT32, shape=[1, 4], data=bytes(15)), "needs 16 bytes, got 15"),
        (inf.Tensor(name="x", dtype=inf.DATA_TYPE_FLOAT32, shape=[-1], data=b""), "negative dimension"),
    ],
    ids=["no-dtype", "short-bytes", "negative-dimension"],
)
async def test_malformed_tensor_bytes_are_invalid_argument_from_the_agent(agent_address, tensor, message):
    async with grpc.aio.insecure_channel(agent_address) as channel:
        stub = inf_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Predict(inf.PredictRequest(model="models/m", inputs=[tensor]), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (e.value.details() or "")
