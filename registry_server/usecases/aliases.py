"""Use cases of named aliases (`champion`): set, move, delete, list, history, and the
protection and gate policy of a protected alias.

Each write is one transaction holding the model's row lock: load the alias, ask
domain/aliases.py for the plan and the permission it needs, evaluate the alias's gate
policy when it is protected and gets a new target, persist the row, then the
ALIAS_CHANGED event (whose details carry the target's artifact, so a serving agent that
follows the alias needs no follow-up call) and the history row. The read cache drops the
model's entries (its aliases included) on that event, here and on every replica.
"""

from __future__ import annotations

import logging

from registry_server.domain import aliases as da
from registry_server.domain.access import Caller, Permission
from registry_server.domain.deployments import ArtifactRef
from registry_server.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from registry_server.read_cache import VersionCache
from registry_server.storage.aliases import AliasStore
from registry_server.storage.gates import Request
from registry_server.storage.outbox import Outbox
from registry_server.usecases.access import Access
from registry_server.usecases.gates import Gates

log = logging.getLogger(__name__)


class Aliases:
    def __init__(self, outbox: Outbox, access: Access, gates: Gates, cache: VersionCache):
        self.outbox = outbox
        self.pool = outbox.pool
        self.access = access
        self.gates = gates
        self.cache = cache
        self.store = AliasStore(outbox)

    async def set_alias(
        self, caller: Caller, model: str, alias: str, version: int, reason: str, protected: bool | None = None
    ) -> tuple[da.Alias, int, Request | None]:
        """Points `alias` at `version`, creating it or moving it; `protected` None keeps the
        current setting. Moving a protected alias passes its gate policy first; when only
        approvals are missing, a promotion request is created instead of the move. Returns
        (the alias, the event's sequence, 0 when nothing changed; the request or None)."""
        alias = da.normalize_alias(alias)
        if version < 1:
            raise InvalidArgument(
                f"'version' must be a version number (1, 2, ...), got {version}; "
                f"list versions with 'modelreg list {model}'"
            )
        await self.access.require(caller, Permission.SET_ALIAS, model=model)
        async with self.store.transaction() as conn:
            current = await self.store.lock(conn, model, alias)
            protected_after = (current.protected if current else False) if protected is None else protected
            await self._authorize(caller, model, alias, current, protected_after)
            target = await self.store.version(conn, model, version)
            plan = da.plan_set(
                model, alias, version, current, protected, reason, caller.name, ArtifactRef.of(target).as_dict()
            )
            if not plan.changed:
                assert current is not None
                return current, 0, None
            assert plan.after is not None
            if plan.after.protected and plan.moves:
                request = await self.gates.promote_or_request(
                    conn, caller, model, version, alias, reason, action="become alias"
                )
                if request is not None:
                    if current is None:  # a new protected alias waits for its approvals unborn
                        raise FailedPrecondition(
                            f"alias {alias!r} of models/{model} does not exist yet and its gate policy needs "
                            "approvals: create it unprotected first, or clear the approvals check"
                        )
                    return current, 0, request
            sequence, after = await self.store.persist(conn, plan, caller.name)
        assert after is not None
        log.info(
            "alias %s of models/%s: v%s -> v%d (event %d)",
            alias,
            model,
            plan.from_version or "-",
            version,
            sequence,
            extra={"principal": caller.name},
        )
        return after, sequence, None

    async def delete_alias(self, caller: Caller, model: str, alias: str, reason: str) -> tuple[int, int]:
        """Deletes an alias. Returns (the version it pointed at, the event's sequence)."""
        alias = da.normalize_alias(alias)
        await self.access.require(caller, Permission.SET_ALIAS, model=model)
        async with self.store.transaction() as conn:
            current = await self.store.lock(conn, model, alias)
            plan = da.plan_delete(model, alias, current, reason)
            await self._authorize(caller, model, alias, current, False)
            sequence, _ = await self.store.persist(conn, plan, caller.name)
        log.info(
            "alias %s of models/%s deleted (was v%d, event %d)",
            alias,
            model,
            plan.from_version,
            sequence,
            extra={"principal": caller.name},
        )
        return plan.from_version, sequence

    async def list_aliases(self, caller: Caller, model: str) -> list[da.Alias]:
        await self.access.require(caller, Permission.READ, model=model)
        return await self.store.list_aliases(model)

    async def history(
        self, caller: Caller, model: str, alias: str, before_id: int, limit: int
    ) -> list[tuple[int, da.AliasChange]]:
        """Moves newest first (of one alias when `alias` is set), ids below `before_id`."""
        await self.access.require(caller, Permission.READ, model=model)
        return await self.store.history(model, da.normalize_alias(alias) if alias else "", before_id, limit)

    async def _authorize(
        self, caller: Caller, model: str, alias: str, current: da.Alias | None, protected_after: bool
    ) -> None:
        """A protected alias (before or after the change) needs PROMOTE; the refusal says so."""
        needed = da.required_permission(current, protected_after)
        if needed is Permission.SET_ALIAS:
            return
        try:
            await self.access.require(caller, needed, model=model)
        except PermissionDenied as e:
            raise PermissionDenied(
                f"alias {alias!r} of models/{model} is protected, so changing it needs the releaser role: {e.message}"
            ) from None
