"""Use cases of model cards: write (editing an approved card sets it back to draft), read
with defaults from the version, and the card status `require-card` gates read."""

from __future__ import annotations

from registry_server.storage.outbox import Outbox
from registry_server.usecases.access import Access


class Cards:
    def __init__(self, outbox: Outbox, access: Access):
        self.outbox = outbox
        self.pool = outbox.pool
        self.access = access
