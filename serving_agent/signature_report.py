"""The signature of a loaded model as the registry stores it (proto), for the agent's status report:
the registry stores it on a version that has none yet (a YOLO `.pt`, whose inputs and
outputs only a load reveals). Read after a successful load; never fails a load (a model
whose signature cannot be read is reported without one)."""

from __future__ import annotations

import logging
from typing import Any

from modelreg.v1 import resources_pb2 as res
from serving_agent.loaders import Loader, OnnxLoader, YoloLoader

log = logging.getLogger("modelreg.agent")

#: onnxruntime's type strings -> numpy's spelling (the registry's element types).
ORT_ELEMENT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}


def of_loader(loader: Loader) -> res.Signature | None:
    """The loaded model's signature, or None where the runtime does not say (a YOLO ONNX
    export served through ultralytics: the registry read that one from the graph)."""
    try:
        if isinstance(loader, OnnxLoader) and loader.session is not None:
            return _of_session(loader.session)
        if isinstance(loader, YoloLoader) and loader.model is not None:
            return _of_yolo(loader)
    except Exception as e:  # noqa: BLE001 - a signature is a report, never a reason to fail a load
        log.warning("%s: could not read the loaded model's signature: %s", loader.spec.name, e)
    return None


def _tensor(name: str, element_type: str, shape: Any) -> res.TensorSpec:
    spec = res.TensorSpec(name=name, element_type=element_type)
    if shape is None:
        return spec
    spec.rank_known = True
    for d in shape:
        if isinstance(d, int) and d >= 0:
            spec.shape.add(size=d)
        elif isinstance(d, str) and d:
            spec.shape.add(symbol=d)
        else:
            spec.shape.add()
    return spec


def _of_session(session: Any) -> res.Signature:
    def spec(meta: Any) -> res.TensorSpec:
        return _tensor(meta.name, ORT_ELEMENT_TYPES.get(meta.type, "unknown"), meta.shape)

    return res.Signature(
        inputs=[spec(i) for i in session.get_inputs()], outputs=[spec(o) for o in session.get_outputs()]
    )


def _of_yolo(loader: YoloLoader) -> res.Signature:
    """A YOLO detector's network at the version's image size, as Ultralytics exports it to
    ONNX: `images` float32 [1, 3, imgsz, imgsz] in, `output0` float32 [1, 4 + classes,
    anchors] out, anchors being the grid cells of every stride ((imgsz / stride)^2 each)."""
    net = loader.model.model
    size = int(loader.imgsz or 640)
    classes = len(loader.model.names)
    strides = [int(s) for s in net.stride.tolist()]
    anchors = sum((size // s) ** 2 for s in strides)
    return res.Signature(
        inputs=[_tensor("images", "float32", [1, 3, size, size])],
        outputs=[_tensor("output0", "float32", [1, 4 + classes, anchors])],
    )
