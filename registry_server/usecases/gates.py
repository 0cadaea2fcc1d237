"""Use cases of promotion governance: gate policies, their evaluation on every path into a
stage or a protected alias, and promotion requests with four-eyes approvals.

`evaluate_in` is the one evaluation: PromoteModelVersion, SetCanary, PromoteCanary,
Rollback and the canary judge (through `Deployments`), SetAlias on a protected alias
(through `enforce`) and CheckGates all call it, inside the transaction that would make the
change and under the model's row lock, so the facts it read are the facts committed.

With an `approvals N` check, a promotion whose other checks pass creates a promotion
request instead of moving anything (`request_or_raise`); the approval that brings the
count to N carries it out in one transaction (`approve`), re-evaluating every other check
then. The requester never approves its own request; a newer request for the same target
supersedes the older; a pending request expires after `request_ttl`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg

from registry_server.domain import deployments as dd
from registry_server.domain.access import Caller, Permission
from registry_server.domain.aliases import plan_set as plan_alias
from registry_server.domain.deployments import ArtifactRef
from registry_server.domain.gates import (
    STAGE_TARGETS,
    Candidate,
    CheckType,
    Evaluation,
    GateFailed,
    GatePolicy,
)
from registry_server.domain.gates import evaluate as evaluate_policy
from registry_server.domain.models import ModelVersion
from registry_server.domain.names import VersionRef
from registry_server.domain.stages import Stage
from registry_server.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from registry_server.storage.aliases import AliasStore
from registry_server.storage.deployments import DeploymentStore
from registry_server.storage.gates import GateStore, Request, StoredPolicy
from registry_server.storage.models import require_model, version_from_row
from registry_server.storage.outbox import Outbox
from registry_server.usecases.access import Access

log = logging.getLogger("modelreg.gates")

DEFAULT_REQUEST_TTL = timedelta(days=7)
_RESERVED = {"latest", "none", "archived"}


def check_target(target: str) -> str:
    t = (target or "").strip().lower()
    if not t:
        raise InvalidArgument("'target' is required: production, staging or an alias name")
    if t in _RESERVED:
        raise InvalidArgument(f"{t!r} cannot be gated: use production, staging or an alias name")
    return t


class Gates:
    def __init__(
        self,
        outbox: Outbox,
        access: Access,
        deployments: DeploymentStore,
        request_ttl: timedelta = DEFAULT_REQUEST_TTL,
    ):
        self.outbox = outbox
        self.pool = outbox.pool
        self.access = access
        self.store = GateStore(outbox)
        self.aliases = AliasStore(outbox)
        self.deployments = deployments
        self.request_ttl = request_ttl

    # ---------------------------------------------------------------- policies

    async def set_policy(self, caller: Caller, model: str, policy: GatePolicy) -> StoredPolicy:
        await self.access.require(caller, Permission.SET_POLICY, model=model)
        policy = GatePolicy(check_target(policy.target), policy.checks, policy.rollback_skips_metrics)
        policy.validate(self.access.enabled)
        await require_model(self.pool, model)
        stored = await self.store.set_policy(model, policy, caller.name)
        log.info("models/%s: gate policy for %s set", model, policy.target, extra={"principal": caller.name})
        return stored

    async def clear_policy(self, caller: Caller, model: str, target: str) -> bool:
        await self.access.require(caller, Permission.SET_POLICY, model=model)
        await require_model(self.pool, model)
        return await self.store.clear_policy(model, check_target(target), caller.name)

    async def policies(self, caller: Caller, model: str, target: str = "") -> list[StoredPolicy]:
        await self.access.require(caller, Permission.READ, model=model)
        await require_model(self.pool, model)
        return await self.store.policies(model, check_target(target) if target else "")

    # ---------------------------------------------------------------- evaluation

    async def evaluate_in(
        self,
        conn: asyncpg.Connection,
        model: str,
        version: int,
        target: str,
        *,
        rollback: bool = False,
        requester: str = "",
    ) -> Evaluation:
        """The target's policy against a version (an empty, passing evaluation without a
        policy: one query). Approvals count the pending request for this version, excluding
        `requester`."""
        facts = await self.store.facts(conn, model, version, target)
        if facts is None:
            return Evaluation(model, version, target)
        policy = facts.policy
        approvals = 0
        if policy.approvals:
            pending = await self.store.pending(conn, model, target, lock=False)
            if pending is not None and pending.version == version:
                approvals = len({p for p in pending.approvers if p != (requester or pending.requester)})
        once = await self.store.once_held(conn, model, version, target) if rollback else False
        candidate = Candidate(
            model, version, facts.metrics, facts.card, approvals, once, facts.signature, facts.production
        )
        return evaluate_policy(policy, candidate, facts.holder, rollback=rollback)

    async def check(self, caller: Caller, ref: VersionRef, target: str, resolve) -> Evaluation:
        """CheckGates: evaluate without moving anything (for CI)."""
        await self.access.require(caller, Permission.READ, model=ref.model)
        version: ModelVersion = await resolve(ref)
        async with self.pool.acquire() as conn:
            return await self.evaluate_in(conn, ref.model, version.version, check_target(target or "production"))

    async def enforce(
        self,
        conn: asyncpg.Connection,
        caller: Caller,
        model: str,
        version: int,
        target: str,
        *,
        rollback: bool = False,
        action: str = "enter",
        ignore_approvals: bool = False,
    ) -> Evaluation:
        """Raises GateFailed unless every check passes (approvals included, unless
        `ignore_approvals`: paths other than PromoteModelVersion cannot create a request)."""
        ev = await self.evaluate_in(conn, model, version, target, rollback=rollback, requester=caller.name)
        failing = ev.failing(ignore=(CheckType.APPROVALS,) if ignore_approvals else ())
        if failing:
            hint = (
                f"; approvals are given to a promotion request: 'modelreg promote {model} {version} {target}' "
                "creates one"
                if target in STAGE_TARGETS
                else f"; approvals are given to a promotion request: 'modelreg alias set {model} {target} {version}' "
                "creates one"
            )
            failing = [
                replace(r, description=r.description + hint) if r.type == CheckType.APPROVALS else r for r in failing
            ]
            raise GateFailed(ev, failing, action)
        return ev

    async def promote_or_request(
        self,
        conn: asyncpg.Connection,
        caller: Caller,
        model: str,
        version: int,
        target: str,
        reason: str,
        action: str = "enter",
    ) -> Request | None:
        """The gate of PromoteModelVersion (a stage) and of moving a protected alias: None to
        go ahead; a new promotion request when only approvals are missing; GateFailed
        otherwise."""
        ev = await self.evaluate_in(conn, model, version, target, requester=caller.name)
        if ev.passed:
            return None
        if not ev.only_approvals_missing:
            raise GateFailed(ev, ev.failing(), action)
        policy = ev.policy
        assert policy is not None
        request, superseded = await self.store.create_request(
            conn, model, version, target, caller.name, reason, policy.approvals, self.request_ttl
        )
        drafts = [self.store.request_event(r, "superseded") for r in superseded]
        drafts.append(self.store.request_event(request, "pending"))
        await self.outbox.emit(conn, caller.name, drafts)
        log.info(
            "models/%s: promotion request %d for v%d to %s (needs %d approvals)",
            model,
            request.id,
            version,
            target,
            policy.approvals,
            extra={"principal": caller.name},
        )
        return request

    # ---------------------------------------------------------------- approvals

    async def list_requests(self, caller: Caller, model: str, state: str, before_id: int, limit: int) -> list[Request]:
        if model:
            await self.access.require(caller, Permission.READ, model=model)
        return await self.store.list_requests(model, state, before_id, limit, self.access.readable(caller))

    async def decide(
        self, caller: Caller, model: str, version: int, target: str, reason: str, *, approve: bool
    ) -> tuple[Request, ModelVersion | None, int]:
        """An approval or a rejection of the pending request for (model, version, target).
        The approval that completes the request carries the promotion out in the same
        transaction, re-evaluating every other check. Returns (request, the promoted
        version or None, the event sequence)."""
        await self.access.require(caller, Permission.APPROVE, model=model)
        target = check_target(target)
        if not approve and not reason.strip():
            raise InvalidArgument("a rejection needs a reason: say what to change (--reason)")
        async with self.deployments.locked(model, version) as tx:
            conn = tx.conn
            request = await self.store.pending(conn, model, target)
            now = datetime.now(UTC)
            if request is None or request.version != version:
                other = f" (the pending one is for v{request.version})" if request is not None else ""
                raise NotFound(
                    f"no pending promotion request for models/{model}/versions/{version} to {target}{other}; "
                    f"list them with 'modelreg requests list {model}'"
                )
            if request.effective_state(now) == "expired":
                raise FailedPrecondition(
                    f"the promotion request for models/{model}/versions/{version} to {target} expired at "
                    f"{request.expires_at.isoformat()}; ask for a new one with 'modelreg promote {model} {version} "
                    f"{target}'"
                )
            if caller.name == request.requester:
                raise PermissionDenied(
                    f"principal {caller.name!r} asked for this promotion and cannot approve or reject it (four eyes); "
                    "another releaser must"
                )
            if any(a.principal == caller.name for a in request.approvals):
                raise FailedPrecondition(f"principal {caller.name!r} already decided on this request")
            request = await self.store.add_decision(conn, request, caller.name, approve, reason)
            if not approve:
                request = await self.store.close(conn, request, "rejected")
                seq = await self.outbox.emit(conn, caller.name, [self.store.request_event(request, "rejected")])
                return request, None, seq
            if len(set(request.approvers)) < request.required:
                seq = await self.outbox.emit(conn, caller.name, [self.store.request_event(request, "pending")])
                return request, None, seq
            ev = await self.evaluate_in(conn, model, version, target, requester=request.requester)
            failing = ev.failing(ignore=(CheckType.APPROVALS,))
            if failing:
                raise GateFailed(ev, failing, action="be approved into")
            why = f"{request.reason} (requested by {request.requester}, approved by {', '.join(request.approvers)})"
            request = await self.store.close(conn, request, "approved")
            if target in STAGE_TARGETS:
                plan = dd.plan_stage_move(
                    tx.deployment, await tx.version(version), Stage(target), why.strip(), caller.name
                )
                seq, rows = await tx.persist(plan, caller.name, caller.token_name, caller.on_behalf_of)
                moved = version_from_row(rows[version])
            else:
                seq, moved = await self._move_alias(conn, model, target, version, why.strip(), caller)
            await self.outbox.emit(conn, caller.name, [self.store.request_event(request, "approved")])
        log.info(
            "models/%s: request %d approved; v%d moved to %s",
            model,
            request.id,
            version,
            target,
            extra={"principal": caller.name},
        )
        return request, moved, seq

    async def _move_alias(
        self, conn: asyncpg.Connection, model: str, alias: str, version: int, reason: str, caller: Caller
    ) -> tuple[int, ModelVersion]:
        """An approved request's alias move, in the approval's transaction (the model row is
        locked already). Returns (sequence, the version the alias now points at)."""
        current = await self.aliases.lock(conn, model, alias)
        if current is None:
            raise FailedPrecondition(f"alias {alias!r} of models/{model} was deleted while its request was pending")
        target = await self.aliases.version(conn, model, version)
        plan = plan_alias(model, alias, version, current, None, reason, caller.name, ArtifactRef.of(target).as_dict())
        seq, _ = await self.aliases.persist(conn, plan, caller.name)
        return seq, target
