"""The serving agent: follows a registry's production versions and serves them.

TF Serving's core shape: a source (`source.RegistrySource`) declares the desired versions,
a manager (`manager.ModelManager`) reconciles toward them with an availability-preserving
policy (`policy.next_action`, a pure function), loaders per runtime (`loaders`), leases on
loaded versions, a router. `Agent` is the in-process library; `server.serve` puts the
inference gRPC API in front of it (`modelreg agent`, `python -m serving_agent`).

The names below are imported on first use: importing the package alone loads none of the
agent extra (numpy, onnxruntime), so `serving_agent.cli` can say the extra is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving_agent.agent import Agent, AgentConfig, Detection, Prediction

__all__ = ["Agent", "AgentConfig", "Detection", "Prediction"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from serving_agent import agent

        return getattr(agent, name)
    raise AttributeError(f"module 'serving_agent' has no attribute {name!r}")
