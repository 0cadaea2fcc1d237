"""The stage workflow: none -> staging -> production -> archived.

Rules (pure, no I/O):
- A version never goes back to NONE: archive it instead.
- Moving a version to the stage it is in is refused, so a retried promote is visible.
- Any other move is legal; archived -> production is how a rollback happens.
- Promoting to production archives the model's previous production version in the same
  transaction (the storage layer does that; `plan_promotion` says what to do).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from registry_server.errors import InvalidArgument, StageConflict


class Stage(str, enum.Enum):
    NONE = "none"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


def parse_stage(value: str) -> Stage:
    v = (value or "").strip().lower()
    if v.startswith("stage_"):
        v = v[len("stage_"):]
    try:
        return Stage(v)
    except ValueError:
        raise InvalidArgument(
            f"unknown stage {value!r}: use one of none, staging, production, archived"
        ) from None


@dataclass(frozen=True)
class PromotionPlan:
    from_stage: Stage
    to_stage: Stage
    # True when the model's current production version (if any, and not this one) must be
    # archived in the same transaction.
    archive_current_production: bool


def plan_promotion(model: str, version: int, current: Stage, target: Stage) -> PromotionPlan:
    if target == Stage.NONE:
        raise StageConflict(
            f"models/{model}/versions/{version} cannot move back to stage 'none'; "
            "move it to 'archived' to retire it"
        )
    if target == current:
        raise StageConflict(
            f"models/{model}/versions/{version} is already in stage '{current.value}'; "
            "choose another stage"
        )
    return PromotionPlan(current, target, archive_current_production=target == Stage.PRODUCTION)
