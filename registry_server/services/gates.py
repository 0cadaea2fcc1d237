"""GovernanceService's gate and approval RPCs: proto in, use case, proto out."""

from __future__ import annotations

from registry_server.usecases.gates import Gates


class GateRpcs:
    gates: Gates
