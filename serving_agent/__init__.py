"""The serving agent: follows a registry's production versions and serves them.

TF Serving's core shape: a source (`source.RegistrySource`) declares the desired versions,
a manager (`manager.ModelManager`) reconciles toward them with an availability-preserving
policy (`policy.next_action`, a pure function), loaders per runtime (`loaders`), leases on
loaded versions, a router. `Agent` is the in-process library; `server.serve` puts the
inference gRPC API in front of it (`modelreg agent`).
"""

from serving_agent.agent import Agent, AgentConfig, Detection, Prediction

__all__ = ["Agent", "AgentConfig", "Detection", "Prediction"]
