"""Use cases of named aliases (`champion`): set, move, delete, list, history, and the
protection and gate policy of a protected alias."""

from __future__ import annotations

from registry_server.read_cache import VersionCache
from registry_server.storage.outbox import Outbox
from registry_server.usecases.access import Access
from registry_server.usecases.gates import Gates


class Aliases:
    def __init__(self, outbox: Outbox, access: Access, gates: Gates, cache: VersionCache):
        self.outbox = outbox
        self.pool = outbox.pool
        self.access = access
        self.gates = gates
        self.cache = cache
