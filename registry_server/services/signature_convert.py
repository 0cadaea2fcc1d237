"""Signatures: proto <-> domain. Nothing else."""

from __future__ import annotations

from modelreg.v1 import resources_pb2 as res
from registry_server.domain.signatures import Dim, Signature, Source, TensorSpec

SOURCE_TO_PROTO = {
    Source.ARTIFACT: res.SIGNATURE_SOURCE_ARTIFACT,
    Source.CLIENT: res.SIGNATURE_SOURCE_CLIENT,
    Source.AGENT: res.SIGNATURE_SOURCE_AGENT,
}


def _dim_to_proto(d: Dim) -> res.Dimension:
    if isinstance(d, int):
        return res.Dimension(size=d)
    if isinstance(d, str):
        return res.Dimension(symbol=d)
    return res.Dimension()


def _dim_from_proto(d: res.Dimension) -> Dim:
    which = d.WhichOneof("value")
    return d.size if which == "size" else d.symbol if which == "symbol" else None


def _tensor_to_proto(t: TensorSpec) -> res.TensorSpec:
    return res.TensorSpec(
        name=t.name,
        element_type=t.element_type,
        shape=[_dim_to_proto(d) for d in t.shape or ()],
        rank_known=t.shape is not None,
    )


def _tensor_from_proto(t: res.TensorSpec) -> TensorSpec:
    shape = tuple(_dim_from_proto(d) for d in t.shape) if t.rank_known or len(t.shape) else None
    return TensorSpec(t.name, t.element_type, shape)


def signature_to_proto(s: Signature | None) -> res.Signature | None:
    if s is None:
        return None
    return res.Signature(
        inputs=[_tensor_to_proto(t) for t in s.inputs],
        outputs=[_tensor_to_proto(t) for t in s.outputs],
        source=SOURCE_TO_PROTO[s.source],
    )


def signature_from_proto(s: res.Signature, source: Source) -> Signature:
    """The signature a caller sent, attributed to `source` (a caller's `source` is ignored)."""
    return Signature(
        tuple(_tensor_from_proto(t) for t in s.inputs),
        tuple(_tensor_from_proto(t) for t in s.outputs),
        source,
    )
