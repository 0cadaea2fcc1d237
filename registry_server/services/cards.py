"""GovernanceService's model-card RPCs: proto in, use case, proto out."""

from __future__ import annotations

from typing import Any

from modelreg.v1 import governance_pb2 as gov
from modelreg.v1 import governance_service_pb2 as gs
from registry_server.domain import cards as dc
from registry_server.domain.names import parse_version_name
from registry_server.errors import InvalidArgument
from registry_server.services import convert as cv
from registry_server.services.auth import caller_of
from registry_server.usecases.cards import Cards

STATUS_TO_PROTO = {
    dc.CardStatus.DRAFT: gov.MODEL_CARD_STATUS_DRAFT,
    dc.CardStatus.PENDING_REVIEW: gov.MODEL_CARD_STATUS_PENDING_REVIEW,
    dc.CardStatus.APPROVED: gov.MODEL_CARD_STATUS_APPROVED,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}


def status_from_proto(value: int) -> dc.CardStatus:
    if value not in STATUS_FROM_PROTO:
        names = ", ".join(gov.ModelCardStatus.Name(v) for v in STATUS_FROM_PROTO)
        what = "unset" if value == gov.MODEL_CARD_STATUS_UNSPECIFIED else f"unknown ({value})"
        raise InvalidArgument(f"card.status is {what}: use {names}")
    return STATUS_FROM_PROTO[value]  # type: ignore[index]


def card_to_proto(card: dc.ModelCard) -> gov.ModelCard:
    p = gov.ModelCard(
        name=card.name,
        status=STATUS_TO_PROTO[card.status],
        update_time=cv.ts(card.update_time),
        updated_by=card.updated_by,
    )
    for f in dc.TEXT_FIELDS:
        setattr(p, f, card.text(f))
    if card.extra:
        p.extra.update(card.extra)
    return p


def edit_from_proto(card: gov.ModelCard, mask: list[str]) -> dc.CardEdit:
    """The fields the mask names, or with an empty mask every field that is set (non-empty
    text, `extra` present, a status)."""
    paths = dc.check_mask(mask)
    if not paths:
        paths = [f for f in dc.TEXT_FIELDS if getattr(card, f)]
        if card.HasField("extra"):
            paths.append("extra")
        if card.status != gov.MODEL_CARD_STATUS_UNSPECIFIED:
            paths.append("status")
        if not paths:
            raise InvalidArgument(
                "nothing to write: set at least one card field ("
                + ", ".join(dc.MASK_FIELDS)
                + "), or name the fields to clear in update_mask"
            )
    content: dict[str, Any] = {}
    for p in paths:
        if p == "extra":
            content["extra"] = cv.from_struct(card.extra, "card.extra")
        elif p != "status":
            content[p] = getattr(card, p)
    status = status_from_proto(card.status) if "status" in paths else None
    return dc.CardEdit(content=content, status=status)


class CardRpcs:
    cards: Cards

    async def UpdateModelCard(self, request: gs.UpdateModelCardRequest, context) -> gs.UpdateModelCardResponse:
        ref = parse_version_name(request.model_version, "model_version")
        edit = edit_from_proto(request.card, list(request.update_mask))
        card, _ = await self.cards.update(caller_of(context), ref, edit)
        return gs.UpdateModelCardResponse(card=card_to_proto(card))

    async def GetModelCard(self, request: gs.GetModelCardRequest, context) -> gs.GetModelCardResponse:
        card = await self.cards.get(caller_of(context), parse_version_name(request.model_version, "model_version"))
        return gs.GetModelCardResponse(card=card_to_proto(card))
