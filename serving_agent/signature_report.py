"""The signature of a loaded model as the registry stores it (proto), for the agent's status report:
the registry stores it on a version that has none yet (a YOLO `.pt`, whose inputs and
outputs only a load reveals). Read after a successful load from the loader's own signature
(serving_agent.signature: `element_type` and `dims` are the registry's form); never fails a
load (a model whose signature cannot be read is reported without one)."""

from __future__ import annotations

import logging

from modelreg.v1 import resources_pb2 as res
from serving_agent.loaders import Loader
from serving_agent.signature import Signature, TensorSpec, ort_dims

log = logging.getLogger("modelreg.agent")


def of_loader(loader: Loader) -> res.Signature | None:
    """The loaded model's signature, or None where it cannot be read."""
    try:
        return to_proto(loader.signature())
    except Exception as e:  # noqa: BLE001 - a signature is a report, never a reason to fail a load
        log.warning("%s: could not read the loaded model's signature: %s", loader.spec.name, e)
    return None


def to_proto(sig: Signature) -> res.Signature:
    return res.Signature(inputs=[_tensor(t) for t in sig.inputs], outputs=[_tensor(t) for t in sig.outputs])


def _tensor(t: TensorSpec) -> res.TensorSpec:
    element = t.element_type or ("string" if t.dtype == object else t.dtype.name if t.dtype is not None else "unknown")
    spec = res.TensorSpec(name=t.name, element_type=element)
    dims = t.dims if t.dims is not None else ort_dims(t.shape)
    if dims is None:
        return spec
    spec.rank_known = True
    for d in dims:
        if isinstance(d, int):
            spec.shape.add(size=d)
        elif d:
            spec.shape.add(symbol=d)
        else:
            spec.shape.add()
    return spec
