"""Real ONNX bytes for tests that need an artifact registered as ONNX but care only about
its bytes (sizes, digests, transfers): the registry refuses bytes that are not ONNX."""

from __future__ import annotations

import os


def onnx_bytes(size: int = 2000) -> bytes:
    """A valid ONNX model (`y = Identity(x)`, x float32 [N, 4]) padded with an initializer
    of `size` random bytes, so every call gives different bytes of about `size` + 150."""
    from onnx import TensorProto, helper

    pad = helper.make_tensor("pad", TensorProto.UINT8, [size], os.urandom(size), raw=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "padded", [x], [y], initializer=[pad])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def onnx_unknown_op() -> bytes:
    """A well-formed ONNX model (the registry accepts it) whose one node is an operator no
    runtime knows, so onnxruntime refuses to load it (INVALID_GRAPH). The chaos suite's."""
    from benchmarks.chaos.load import unloadable_onnx

    return unloadable_onnx()
