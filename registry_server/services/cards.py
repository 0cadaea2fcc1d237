"""GovernanceService's model-card RPCs: proto in, use case, proto out."""

from __future__ import annotations

from registry_server.usecases.cards import Cards


class CardRpcs:
    cards: Cards
