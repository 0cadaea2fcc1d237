"""GovernanceService: gates and approvals, model cards and aliases, each part's RPCs in a
module of its own (services/gates.py, cards.py, aliases.py), served as one service."""

from __future__ import annotations

from modelreg.v1 import governance_service_pb2_grpc as gv_grpc
from registry_server.services.aliases import AliasRpcs
from registry_server.services.cards import CardRpcs
from registry_server.services.gates import GateRpcs
from registry_server.usecases.aliases import Aliases
from registry_server.usecases.cards import Cards
from registry_server.usecases.gates import Gates
from registry_server.usecases.models import Models


class GovernanceServicer(GateRpcs, CardRpcs, AliasRpcs, gv_grpc.GovernanceServiceServicer):
    def __init__(self, gates: Gates, cards: Cards, aliases: Aliases, models: Models):
        self.gates = gates
        self.cards = cards
        self.aliases = aliases
        self.models = models
