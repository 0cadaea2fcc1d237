"""Moved to `modelreg.inference` (the app side of the sidecar belongs to the SDK, which apps
install without the agent). Kept so `from serving_agent.client import InferenceClient` still works."""

from modelreg.inference import Box, DetectResult, InferenceClient, PredictResult

__all__ = ["Box", "DetectResult", "InferenceClient", "PredictResult"]
