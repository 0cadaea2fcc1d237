"""Goals whose subject does not exist yet: each row says what it needs."""

from __future__ import annotations

from benchmarks.report import Row, not_measurable

NAME = "pending"
GOALS = "8,9,10,12"


def run(env, cfg) -> list[Row]:
    agent = "the serving agent (issue 5, serving_agent/)"
    return [
        not_measurable("8", NAME, "promote -> first response from the new version at every agent (1/10/50 agents)", agent),
        not_measurable("9", NAME, "zero-drop swaps: ≥1,000 req/s across ≥100 promote/rollback cycles", agent),
        not_measurable("10", NAME, "sidecar overhead: Predict via agent vs in-process onnxruntime (YOLOv8n 640)", agent),
        not_measurable("12", NAME, "canary router cost per request and realized split over 100,000 requests",
                       "the serving agent's canary router (issue 5)"),
    ]
