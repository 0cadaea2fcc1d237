"""The stage workflow: none -> staging -> production -> archived.

Rules (pure, no I/O):
- A version never goes back to NONE: archive it instead.
- Moving a version to the stage it is in is refused, so a retried promote is visible.
- Any other move is legal; archived -> production is how a rollback happens.
- Promoting to production archives the model's previous production version in the same
  transaction (`deployments.plan_stage_move` plans it).
"""

from __future__ import annotations

import enum

from registry_server.errors import InvalidArgument, StageConflict


class Stage(enum.StrEnum):
    NONE = "none"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


def parse_stage(value: str) -> Stage:
    v = (value or "").strip().lower()
    if v.startswith("stage_"):
        v = v[len("stage_") :]
    try:
        return Stage(v)
    except ValueError:
        raise InvalidArgument(f"unknown stage {value!r}: use one of none, staging, production, archived") from None


def check_stage_move(model: str, version: int, current: Stage, target: Stage) -> None:
    """Refuses an illegal move (StageConflict); any other move is legal."""
    if target == Stage.NONE:
        raise StageConflict(
            f"models/{model}/versions/{version} cannot move back to stage 'none'; move it to 'archived' to retire it"
        )
    if target == current:
        raise StageConflict(
            f"models/{model}/versions/{version} is already in stage '{current.value}'; choose another stage"
        )
