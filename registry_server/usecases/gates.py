"""Use cases of promotion governance: gate policies, their evaluation on every path into a
stage or a protected alias, and promotion requests with four-eyes approvals."""

from __future__ import annotations

from registry_server.storage.outbox import Outbox
from registry_server.usecases.access import Access


class Gates:
    def __init__(self, outbox: Outbox, access: Access):
        self.outbox = outbox
        self.pool = outbox.pool
        self.access = access
