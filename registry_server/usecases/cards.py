"""Use cases of model cards: write (editing an approved card sets it back to draft), read
with defaults from the version, and the card status `require-card` gates read.

A write loads the card under its row lock, asks `domain.cards.plan_update` what the edit
does and which permissions it needs, authorizes, then persists the plan and emits one
MODEL_CARD_CHANGED event in the same transaction (the event last). Versions are addressed
by number or by alias, resolved by the models store as every other read does.
"""

from __future__ import annotations

from registry_server.domain import cards as dc
from registry_server.domain.access import Caller, Permission
from registry_server.domain.models import ModelVersion
from registry_server.domain.names import VersionRef
from registry_server.errors import Aborted, NotFound, PermissionDenied
from registry_server.storage import cards as store
from registry_server.storage.models import ModelStore
from registry_server.storage.outbox import Outbox
from registry_server.usecases.access import Access

# A card created concurrently between our lock and our insert: plan again on it, once.
_ATTEMPTS = 2


class Cards:
    def __init__(self, outbox: Outbox, access: Access):
        self.outbox = outbox
        self.pool = outbox.pool
        self.access = access
        self.models = ModelStore(outbox)  # reads only: version resolution

    async def _version(self, ref: VersionRef) -> ModelVersion:
        key: int | str = ref.number if ref.number is not None else (ref.alias or "latest")
        return await self.models.get_version(ref.model, key)

    async def update(self, caller: Caller, ref: VersionRef, edit: dc.CardEdit) -> tuple[dc.ModelCard, int]:
        """Applies `edit` to the version's card (creating it); returns the card as shown
        (with defaults) and the event sequence (0 when the edit changed nothing)."""
        dc.validate_edit(edit)
        # Any write needs one of the two card permissions, checked before anything about the
        # version is revealed; the plan then says which the edit needs exactly.
        project = await self.access.project_of(ref.model) if caller.authenticated else ""
        self._require_any(caller, project, dc.WRITE_PERMISSIONS)
        version = await self._version(ref)
        sequence = 0
        async with self.outbox.transaction() as conn:
            for _ in range(_ATTEMPTS):
                current = await store.lock(conn, ref.model, version.version)
                plan = dc.plan_update(current, edit)
                self._authorize(caller, project, plan)
                if not plan.changed:
                    assert current is not None
                    card = current
                    break
                if current is None:
                    created = await store.insert(
                        conn, ref.model, version.version, plan.content, plan.status, caller.name
                    )
                    if created is None:
                        continue
                    card = created
                else:
                    card = await store.update(conn, ref.model, version.version, plan.content, plan.status, caller.name)
                sequence = await self.outbox.emit(conn, caller.name, [plan.event(ref.model, version.version)])
                break
            else:  # a card created, then deleted with its version, between two statements
                raise Aborted(f"the card of {ref} changed while it was written; retry")
        return dc.with_defaults(card, version.lineage, version.metrics), sequence

    @classmethod
    def _authorize(cls, caller: Caller, project: str, plan: dc.CardPlan) -> None:
        """Each requirement needs one of its permissions."""
        for options in plan.requirements:
            cls._require_any(caller, project, options)

    @staticmethod
    def _require_any(caller: Caller, project: str, options: tuple[Permission, ...]) -> None:
        """One of `options`, or PermissionDenied naming the first and saying what to do."""
        if any(caller.allows(p, project) for p in options):
            return
        try:
            caller.require(options[0], project)
        except PermissionDenied as e:
            e.message = f"{e.message}; {dc.permission_hint(options[0])}"
            e.args = (e.message,)
            raise

    async def get(self, caller: Caller, ref: VersionRef) -> dc.ModelCard:
        """The version's card with training data and evaluation defaulted from it;
        NotFound (saying how to write one) when it has none."""
        await self.access.require(caller, Permission.READ, model=ref.model)
        version = await self._version(ref)
        card = await store.get(self.pool, ref.model, version.version)
        if card is None:
            name = f"models/{ref.model}/versions/{version.version}"
            raise NotFound(
                f"{name} has no model card; write one with 'modelreg card set {ref.model} {version.version} "
                "--summary TEXT' (or --file card.yaml), or UpdateModelCard"
            )
        return dc.with_defaults(card, version.lineage, version.metrics)
