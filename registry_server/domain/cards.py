"""Model cards, as pure rules: the fields, their validation, the review status, the
draft-on-edit rule, who may make a change, and the defaults a card shows from its version.

A card documents one version (`models/{model}/versions/{n}/card`). Its CONTENT is the
text fields and `extra`; its STATUS is draft, pending_review or approved. The rules:

- An edit names the fields it writes (an empty value clears one) and optionally a status.
- Changing the content of an approved card sets it back to draft, unless the same edit
  names a status: then that status applies (and `approved` needs the approve permission,
  so an edited card is approved again only by someone who may approve).
- Changing content needs `versions.update`. Making the card approved (from another status,
  or together with a content change) needs `promotions.approve`. Any other status move
  needs either of them (an approver may send a card back to draft).
- An edit that changes nothing is a no-op: nothing is written and no event is emitted.
- On output, an empty `training_data` shows the version's lineage and an empty
  `evaluation` its metrics; what is stored stays empty, so the card keeps following them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from registry_server.domain.access import Permission
from registry_server.domain.events import EventDraft
from registry_server.domain.models import Lineage
from registry_server.errors import InvalidArgument

EVENT_TYPE = "MODEL_CARD_CHANGED"


class CardStatus(StrEnum):
    DRAFT = "draft"
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"


TEXT_FIELDS = (
    "summary",
    "intended_use",
    "out_of_scope_use",
    "limitations",
    "training_data",
    "evaluation",
    "ethical_considerations",
)
CONTENT_FIELDS = (*TEXT_FIELDS, "extra")
#: What an update mask may name.
MASK_FIELDS = (*CONTENT_FIELDS, "status")

#: A card write of any kind needs one of these (which one: `CardPlan.requirements`).
WRITE_PERMISSIONS = (Permission.UPDATE_VERSION, Permission.APPROVE)

MAX_TEXT_CHARS = 64 * 1024
MAX_EXTRA_BYTES = 64 * 1024


@dataclass(frozen=True)
class ModelCard:
    """A stored card. `content` holds only non-empty fields: text fields as str, `extra`
    as a JSON object (dict)."""

    model: str
    version: int
    content: Mapping[str, Any] = field(default_factory=dict)
    status: CardStatus = CardStatus.DRAFT
    updated_by: str = ""
    update_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"models/{self.model}/versions/{self.version}/card"

    def text(self, name: str) -> str:
        return str(self.content.get(name, ""))

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.content.get("extra") or {})


@dataclass(frozen=True)
class CardEdit:
    """What an update writes: `content` maps each field it names to its new value ("" or
    {} clears it); `status` is None when the update does not name it."""

    content: Mapping[str, Any] = field(default_factory=dict)
    status: CardStatus | None = None


@dataclass(frozen=True)
class CardPlan:
    """The outcome of an edit. `requirements`: every entry must be met by at least one of
    its permissions. `changed` false means write nothing."""

    content: dict[str, Any]
    status: CardStatus
    changed: bool
    changed_fields: tuple[str, ...]
    requirements: tuple[tuple[Permission, ...], ...]
    reset_to_draft: bool = False

    def event(self, model: str, version: int) -> EventDraft:
        return EventDraft(
            EVENT_TYPE,
            model,
            version,
            details={"status": self.status.value, "fields": list(self.changed_fields)},
        )


def parse_status(value: str) -> CardStatus:
    try:
        return CardStatus(value)
    except ValueError:
        raise InvalidArgument(
            f"unknown model card status {value!r}: use {', '.join(s.value for s in CardStatus)}"
        ) from None


def check_mask(paths: Iterable[str]) -> list[str]:
    """The update mask's fields, in order and without repeats; unknown paths are
    INVALID_ARGUMENT naming the allowed ones."""
    out: list[str] = []
    for p in paths:
        if p not in MASK_FIELDS:
            raise InvalidArgument(
                f"update_mask path {p!r} is not a model card field; use any of {', '.join(MASK_FIELDS)}"
            )
        if p not in out:
            out.append(p)
    return out


def validate_edit(edit: CardEdit) -> None:
    """Field names, types and sizes; raises InvalidArgument saying what to change."""
    for name, value in edit.content.items():
        if name not in CONTENT_FIELDS:
            raise InvalidArgument(f"{name!r} is not a model card field; use any of {', '.join(CONTENT_FIELDS)}")
        if name == "extra":
            if not isinstance(value, Mapping):
                raise InvalidArgument("card.extra must be an object of free-form fields")
            try:
                size = len(json.dumps(value, allow_nan=False).encode())
            except (TypeError, ValueError) as e:
                raise InvalidArgument(f"card.extra must be plain JSON (objects, lists, text, numbers): {e}") from None
            if size > MAX_EXTRA_BYTES:
                raise InvalidArgument(
                    f"card.extra is {size} bytes as JSON; keep it under {MAX_EXTRA_BYTES} (link to large documents)"
                )
        else:
            if not isinstance(value, str):
                raise InvalidArgument(f"card.{name} must be text")
            if len(value) > MAX_TEXT_CHARS:
                raise InvalidArgument(
                    f"card.{name} is {len(value)} characters; keep it under {MAX_TEXT_CHARS} (link to longer documents)"
                )


def plan_update(current: ModelCard | None, edit: CardEdit) -> CardPlan:
    """What an edit does to the current card (None: there is none yet). Pure."""
    validate_edit(edit)
    before: dict[str, Any] = dict(current.content) if current is not None else {}
    after = dict(before)
    for name, value in edit.content.items():
        if value in ("", {}) or value is None:
            after.pop(name, None)
        else:
            after[name] = dict(value) if name == "extra" else value
    changed_fields = tuple(f for f in CONTENT_FIELDS if before.get(f) != after.get(f))
    content_changed = bool(changed_fields)
    old_status = current.status if current is not None else None

    reset = False
    if edit.status is not None:
        status = edit.status
    elif old_status is None:
        status = CardStatus.DRAFT
    elif old_status is CardStatus.APPROVED and content_changed:
        status, reset = CardStatus.DRAFT, True
    else:
        status = old_status

    approving = status is CardStatus.APPROVED and (old_status is not CardStatus.APPROVED or content_changed)
    requirements: list[tuple[Permission, ...]] = []
    if content_changed:
        requirements.append((Permission.UPDATE_VERSION,))
    if approving:
        requirements.append((Permission.APPROVE,))
    if not requirements:
        requirements.append(WRITE_PERMISSIONS)
    changed = current is None or content_changed or status is not old_status
    return CardPlan(
        content=after,
        status=status,
        changed=changed,
        changed_fields=changed_fields + (("status",) if status is not old_status else ()),
        requirements=tuple(requirements),
        reset_to_draft=reset,
    )


def permission_hint(permission: Permission) -> str:
    """What to do when a card change lacks `permission` (appended to the denial)."""
    if permission is Permission.APPROVE:
        return (
            "approving a model card needs a releaser or project-admin; leave the status out to save the edit "
            "as a draft, or set it to pending_review for a reviewer"
        )
    return "editing a model card needs the trainer (or project-admin) role"


# ---------------------------------------------------------------- defaults on output


def default_training_data(lineage: Lineage) -> str:
    """One sentence from the lineage, '' when it is empty."""
    parts = []
    if lineage.dataset_id:
        parts.append(
            f"dataset {lineage.dataset_id}" + (f" (hash {lineage.dataset_hash})" if lineage.dataset_hash else "")
        )
    elif lineage.dataset_hash:
        parts.append(f"dataset hash {lineage.dataset_hash}")
    if lineage.parent_version:
        parts.append(f"parent version {lineage.parent_version}")
    if lineage.run_id:
        parts.append(f"training run {lineage.run_id}")
    if lineage.code_revision:
        parts.append(f"code revision {lineage.code_revision}")
    if not parts:
        return ""
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:]


def _number(x: float) -> str:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.6g}"


def default_evaluation(metrics: Mapping[str, float]) -> str:
    """The metrics as `name=value, ...` in name order, '' when there are none."""
    return ", ".join(f"{k}={_number(v)}" for k, v in sorted(metrics.items()))


def with_defaults(card: ModelCard, lineage: Lineage, metrics: Mapping[str, float]) -> ModelCard:
    """The card as shown: empty training data and evaluation filled from the version."""
    content = dict(card.content)
    if not content.get("training_data"):
        default = default_training_data(lineage)
        if default:
            content["training_data"] = default
    if not content.get("evaluation"):
        default = default_evaluation(metrics)
        if default:
            content["evaluation"] = default
    return replace(card, content=content)
