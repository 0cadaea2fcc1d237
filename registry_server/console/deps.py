"""What the console calls: the registry's use cases, built once by `registry_server.app`."""

from __future__ import annotations

from dataclasses import dataclass

from registry_server.usecases.access import Access
from registry_server.usecases.agents import Agents
from registry_server.usecases.cards import Cards
from registry_server.usecases.deployments import Deployments
from registry_server.usecases.events import Events
from registry_server.usecases.gates import Gates
from registry_server.usecases.identity import Identity
from registry_server.usecases.models import Models


@dataclass(frozen=True)
class UseCases:
    access: Access
    identity: Identity
    models: Models
    deployments: Deployments
    agents: Agents
    gates: Gates
    cards: Cards
    events: Events
    # Seconds between keep-alive comments on an idle live-update stream.
    keepalive_s: float = 15.0
