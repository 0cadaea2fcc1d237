"""GovernanceService's alias RPCs: proto in, use case, proto out."""

from __future__ import annotations

from registry_server.usecases.aliases import Aliases


class AliasRpcs:
    aliases: Aliases
