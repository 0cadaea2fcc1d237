"""What a write asks the outbox to emit: event drafts, built by the domain's plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EventDraft:
    """One event before it has a sequence number. `version` is 0 for model-level and
    deployment events; `model` is empty for an ACCESS_CHANGED event. A DEPLOYMENT_CHANGED
    event carries the new deployment in `details["deployment"]` (see
    `deployments.Deployment.as_dict`)."""

    type: str
    model: str
    version: int = 0
    from_stage: str = ""
    to_stage: str = ""
    reason: str = ""
    details: dict[str, Any] | None = None
    # The model's project, when the model row may be gone by the emit (a deletion);
    # otherwise the outbox reads it from the model. Empty with no model: an access event.
    project: str = ""
