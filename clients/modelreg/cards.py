"""SDK methods for model cards, mixed into `modelreg.Client`, and what the CLI shares:
reading a card from a YAML or JSON mapping, and printing one as Markdown.

    reg.set_card("detector", 3, summary="Finds people in CCTV frames", intended_use="...")
    reg.set_card("detector", 3, status="approved")         # needs a releaser
    print(card_markdown(reg.get_card("detector", "production")))
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import grpc

from modelreg import errors
from modelreg.v1 import governance_pb2 as gov
from modelreg.v1 import governance_service_pb2 as gs
from modelreg.v1 import governance_service_pb2_grpc as gs_grpc

TEXT_FIELDS = (
    "summary",
    "intended_use",
    "out_of_scope_use",
    "limitations",
    "training_data",
    "evaluation",
    "ethical_considerations",
)
#: Every field a card file may hold; the output-only ones are ignored when read back.
CARD_FIELDS = (*TEXT_FIELDS, "extra", "status")
OUTPUT_ONLY = ("name", "update_time", "updated_by")

STATUSES = {
    "draft": gov.MODEL_CARD_STATUS_DRAFT,
    "pending_review": gov.MODEL_CARD_STATUS_PENDING_REVIEW,
    "approved": gov.MODEL_CARD_STATUS_APPROVED,
}
STATUS_NAMES = {v: k for k, v in STATUSES.items()}

SECTION_TITLES = {
    "summary": "Summary",
    "intended_use": "Intended use",
    "out_of_scope_use": "Out-of-scope use",
    "limitations": "Limitations",
    "training_data": "Training data",
    "evaluation": "Evaluation",
    "ethical_considerations": "Ethical considerations",
}


def status_enum(status: str | int) -> gov.ModelCardStatus.ValueType:
    """`draft`, `pending_review` (or `pending-review`), `approved`, or the enum's name or
    number. An unknown one is InvalidArgument."""
    if isinstance(status, int):
        return gov.ModelCardStatus.ValueType(status)
    key = status.strip().lower().removeprefix("model_card_status_").replace("-", "_")
    if key not in STATUSES:
        raise errors.InvalidArgument(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unknown model card status {status!r}: use {', '.join(STATUSES)}",
        )
    return STATUSES[key]


def status_name(status: int) -> str:
    return STATUS_NAMES.get(gov.ModelCardStatus.ValueType(status), "unspecified")


def card_version_name(model: str, version: int | str) -> str:
    model = model if model.startswith("models/") else f"models/{model}"
    return f"{model}/versions/{version}"


def _field_key(key: str) -> str:
    """`intendedUse`, `intended-use` and `intended_use` all name `intended_use`."""
    key = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key.strip()).lower()
    return key.replace("-", "_").replace(" ", "_")


def card_fields(data: Any) -> dict[str, Any]:
    """The card fields of a mapping read from a YAML or JSON file (or `get -o json`'s
    output): keys in snake_case, camelCase or kebab-case; output-only keys are dropped.
    Raises ValueError saying what is wrong."""
    if not isinstance(data, Mapping):
        raise ValueError(
            f"a card file holds a mapping of card fields ({', '.join(CARD_FIELDS)}), not {type(data).__name__}"
        )
    out: dict[str, Any] = {}
    for raw, value in data.items():
        key = _field_key(str(raw))
        if key in OUTPUT_ONLY:
            continue
        if key not in CARD_FIELDS:
            raise ValueError(f"unknown card field {str(raw)!r}: use any of {', '.join(CARD_FIELDS)}")
        if key == "extra":
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ValueError("'extra' must be a mapping of free-form fields")
            # YAML dates and the like become text: a card is JSON on the wire.
            value = json.loads(json.dumps(value, default=str))
        elif key == "status":
            if not isinstance(value, str):
                raise ValueError(f"'status' must be one of {', '.join(STATUSES)}")
            try:
                status_enum(value)
            except errors.InvalidArgument as e:
                raise ValueError(e.message) from None
        else:
            if value is None:
                value = ""
            elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(f"{key!r} must be text (use 'extra' for structured fields)")
            value = str(value)
        out[key] = value
    return out


def card_markdown(card: gov.ModelCard) -> str:
    """The card as a Markdown document: a title, the status line, one section per field
    (`_Not provided._` where empty), and `extra` as a list."""
    name = card.name.removesuffix("/card") or "model card"
    lines = [f"# Model card: {name}", ""]
    status = f"**Status:** {status_name(card.status)}"
    if card.updated_by:
        when = ""
        if card.HasField("update_time"):
            when = datetime.fromtimestamp(card.update_time.seconds, tz=UTC).strftime(" %Y-%m-%d %H:%M:%S UTC")
        status += f" (updated{when} by {card.updated_by})"
    lines += [status, ""]
    for field, title in SECTION_TITLES.items():
        text = getattr(card, field).strip()
        lines += [f"## {title}", "", text or "_Not provided._", ""]
    if card.HasField("extra") and card.extra.fields:
        from google.protobuf import json_format

        extra = json_format.MessageToDict(card.extra)
        lines += ["## Additional information", ""]
        for key in sorted(extra):
            value = extra[key]
            shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            lines.append(f"- **{key}**: {shown}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


class CardMixin:
    """Needs `self._channel` and `self._call` from `Client`."""

    if TYPE_CHECKING:
        _channel: grpc.Channel
        _call: Callable[..., Any]

    @cached_property
    def _cards_stub(self) -> gs_grpc.GovernanceServiceStub:
        return gs_grpc.GovernanceServiceStub(self._channel)

    def set_card(
        self,
        model: str,
        version: int | str,
        *,
        summary: str | None = None,
        intended_use: str | None = None,
        out_of_scope_use: str | None = None,
        limitations: str | None = None,
        training_data: str | None = None,
        evaluation: str | None = None,
        ethical_considerations: str | None = None,
        extra: dict[str, Any] | None = None,
        status: str | int | None = None,
    ) -> gov.ModelCard:
        """Writes the fields given (not None; "" clears a field) to a version's card,
        creating it. Editing an approved card's content sets it back to draft unless
        `status` is given; `status="approved"` needs promotions.approve (a releaser)."""
        card = gov.ModelCard()
        mask: list[str] = []
        texts = {
            "summary": summary,
            "intended_use": intended_use,
            "out_of_scope_use": out_of_scope_use,
            "limitations": limitations,
            "training_data": training_data,
            "evaluation": evaluation,
            "ethical_considerations": ethical_considerations,
        }
        for field, value in texts.items():
            if value is not None:
                setattr(card, field, value)
                mask.append(field)
        if extra is not None:
            card.extra.update(extra)
            mask.append("extra")
        if status is not None:
            card.status = status_enum(status)
            mask.append("status")
        if not mask:
            raise errors.InvalidArgument(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"nothing to write: give at least one of {', '.join(CARD_FIELDS)}",
            )
        req = gs.UpdateModelCardRequest(model_version=card_version_name(model, version), card=card, update_mask=mask)
        return self._call(self._cards_stub.UpdateModelCard, req).card

    def get_card(self, model: str, version: int | str) -> gov.ModelCard:
        """A version's card, training data and evaluation defaulted from its lineage and
        metrics; NotFound when it has none."""
        req = gs.GetModelCardRequest(model_version=card_version_name(model, version))
        return self._call(self._cards_stub.GetModelCard, req).card
