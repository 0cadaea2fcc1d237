"""Use cases of deployments and stages: promote, canary, rollback, the canary policy and
its automatic verdicts, and the history of each.

Every write is the same three steps, once each: load the model's deployment (and the
version the request names) under the model's row lock, ask `domain.deployments` for a plan
(or a typed refusal), persist the plan. PromoteModelVersion, the canary actions, rollback
and the canary judge all come through here, so stages, the production pointer, the
deployment, the history and the events never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from registry_server.domain import deployments as dd
from registry_server.domain.access import Caller, Permission
from registry_server.domain.gates import STAGE_TARGETS, GateFailed
from registry_server.domain.models import ModelVersion, StageTransition
from registry_server.domain.names import VersionRef
from registry_server.domain.stages import Stage
from registry_server.errors import ModelNotFound
from registry_server.metrics import RegistryMetrics
from registry_server.storage.agents import AgentStore
from registry_server.storage.deployments import DeploymentStore, DeploymentTx, HistoryEntry
from registry_server.storage.gates import Request
from registry_server.storage.models import version_from_row
from registry_server.usecases.access import Access
from registry_server.usecases.gates import Gates

log = logging.getLogger("modelreg.deployments")

JUDGE_ACTOR = "modelreg-canary-judge"
JUDGE = Caller(principal=JUDGE_ACTOR)


@dataclass(frozen=True)
class Promotion:
    """What PromoteModelVersion did: the version (moved, or unmoved with `request`), the
    production version it archived, the event sequence, and the promotion request created
    instead of a move when the gate needs approvals."""

    version: ModelVersion
    archived: ModelVersion | None
    sequence: int
    request: Request | None = None


class Deployments:
    def __init__(
        self,
        store: DeploymentStore,
        agents: AgentStore,
        stats_window: timedelta,
        access: Access,
        gates: Gates,
        metrics: RegistryMetrics | None = None,
    ):
        self.access = access
        self.gates = gates
        self._blocked: set[tuple[str, int]] = set()  # canaries the judge found gated (logged once)
        self.metrics = metrics or RegistryMetrics()
        self.store = store
        self.agents = agents
        self.stats_window = stats_window

    # ------------------------------------------------------------------ reads

    async def get(self, caller: Caller, model: str) -> dd.Deployment:
        await self.access.require(caller, Permission.READ, model=model)
        return await self.store.get(model)

    async def get_many(self, caller: Caller, models: Sequence[str]) -> dict[str, dd.Deployment]:
        """`get` of each model, read in one statement; ModelNotFound for one that does not exist."""
        for model in models:
            await self.access.require(caller, Permission.READ, model=model)
        by_name = {d.model: d for d in (await self.store.snapshot(models))[1]} if models else {}
        for model in models:
            if model not in by_name:
                raise ModelNotFound(model)
        return by_name

    async def history(self, caller: Caller, model: str, before_id: int, limit: int) -> list[tuple[int, HistoryEntry]]:
        await self.access.require(caller, Permission.READ, model=model)
        return await self.store.history(model, before_id, limit)

    async def transitions(
        self, caller: Caller, model: str, before_id: int, limit: int
    ) -> list[tuple[int, StageTransition]]:
        await self.access.require(caller, Permission.READ, model=model)
        return await self.store.transitions(model, before_id, limit)

    # ------------------------------------------------------------------ writes

    async def promote(self, caller: Caller, ref: VersionRef, stage: Stage, reason: str) -> Promotion:
        """Moves a version to `stage` after its gate policy passes, or, when only approvals
        are missing, creates a promotion request instead (`Promotion.request`)."""
        with self.metrics.outcome(self.metrics.promotions, stage=stage.value):
            await self.access.require(caller, Permission.PROMOTE, model=ref.model)
            return await self._promote(caller, ref, stage, reason)

    async def _promote(self, caller: Caller, ref: VersionRef, stage: Stage, reason: str) -> Promotion:
        actor = caller.name
        async with self.store.locked(ref.model, ref.number or 0) as tx:
            target = await tx.version(ref.number if ref.number is not None else (ref.alias or ""))
            plan = dd.plan_stage_move(tx.deployment, target, stage, reason, actor)
            if stage.value in STAGE_TARGETS:
                request = await self.gates.promote_or_request(
                    tx.conn, caller, ref.model, target.version, stage.value, reason
                )
                if request is not None:
                    row = await tx.conn.fetchrow(
                        "SELECT * FROM model_versions WHERE model = $1 AND version = $2", ref.model, target.version
                    )
                    return Promotion(version_from_row(row), None, 0, request)
            seq, rows = await tx.persist(plan, actor, caller.token_name, caller.on_behalf_of)
        log.info(
            "moved models/%s/versions/%d to %s (event %d)",
            ref.model,
            target.version,
            stage.value,
            seq,
            extra={"principal": actor},
        )
        archived = next((m.version for m in plan.moves if m.replaced_by), 0)
        return Promotion(
            version_from_row(rows[target.version]), version_from_row(rows[archived]) if archived else None, seq
        )

    async def set_canary(
        self, caller: Caller, model: str, version: int, weight: int, reason: str, etag: str = ""
    ) -> tuple[dd.Deployment, int]:
        await self.access.require(caller, Permission.CANARY, model=model)
        async with self.store.locked(model, version) as tx:
            dd.check_etag(tx.deployment, etag)
            plan = dd.plan_set_canary(tx.deployment, await tx.version(version), weight, reason, caller.name)
            # A canary serves production traffic: it passes production's gates (approvals
            # apply when it is promoted).
            await self.gates.enforce(
                tx.conn, caller, model, version, "production", action="start a canary in", ignore_approvals=True
            )
            return await self._apply(tx, plan, caller)

    async def promote_canary(
        self, caller: Caller, model: str, reason: str, etag: str = ""
    ) -> tuple[dd.Deployment, int]:
        await self.access.require(caller, Permission.CANARY, model=model)
        async with self.store.locked(model) as tx:
            dd.check_etag(tx.deployment, etag)
            canary = dd.require_canary(tx.deployment, "promote")
            plan = dd.plan_promote_canary(
                tx.deployment, await tx.version(canary.version), reason, caller.name, dd.Action.PROMOTE_CANARY
            )
            await self.gates.enforce(tx.conn, caller, model, canary.version, "production")
            return await self._apply(tx, plan, caller)

    async def abort_canary(self, caller: Caller, model: str, reason: str, etag: str = "") -> tuple[dd.Deployment, int]:
        await self.access.require(caller, Permission.CANARY, model=model)
        async with self.store.locked(model) as tx:
            dd.check_etag(tx.deployment, etag)
            plan = dd.plan_abort_canary(tx.deployment, reason, caller.name, dd.Action.ABORT_CANARY)
            return await self._apply(tx, plan, caller)

    async def rollback(
        self, caller: Caller, model: str, to_version: int, reason: str, etag: str = ""
    ) -> tuple[dd.Deployment, int]:
        await self.access.require(caller, Permission.ROLLBACK, model=model)
        async with self.store.locked(model, to_version) as tx:
            dd.check_etag(tx.deployment, etag)
            target = await tx.version(to_version) if to_version else await tx.previous_production()
            plan = dd.plan_rollback(tx.deployment, target, reason, caller.name)  # refuses a missing target
            assert target is not None
            await self.gates.enforce(tx.conn, caller, model, target.version, "production", rollback=True)
            return await self._apply(tx, plan, caller)

    async def set_policy(self, caller: Caller, model: str, policy: dd.CanaryPolicy) -> dd.Deployment:
        await self.access.require(caller, Permission.SET_POLICY, model=model)
        policy.validate()
        return await self.store.set_policy(model, policy, caller.name)

    async def _apply(self, tx: DeploymentTx, plan: dd.Plan, caller: Caller) -> tuple[dd.Deployment, int]:
        seq, _ = await tx.persist(plan, caller.name, caller.token_name, caller.on_behalf_of)
        if plan.changed:
            log.info("models/%s: %s (event %d)", plan.model, plan.action.value, seq, extra={"principal": caller.name})
        after = plan.after
        if plan.changed:  # the row's updated_at is the commit's now(); within a millisecond of this
            after = replace(after, update_time=datetime.now(UTC))
        return after, seq

    # ------------------------------------------------------------------ the canary judge

    async def judge_canaries(self) -> list[tuple[str, dd.Verdict, str]]:
        """One pass of the canary judge: each running canary with a policy is judged on what
        live agents report; a breach aborts it (AUTO_ABORT), a canary that met its policy is
        promoted (AUTO_PROMOTE). Returns the verdicts applied."""
        decisions: list[tuple[str, dd.Verdict, str]] = []
        for d in await self.store.running_canaries():
            assert d.canary is not None
            stats = await self.agents.version_stats(d.model, [d.stable_version, d.canary.version], self.stats_window)
            verdict, reason = dd.judge_canary(
                d.policy, stats.get(d.stable_version, dd.VersionStats()), stats.get(d.canary.version, dd.VersionStats())
            )
            if verdict == dd.Verdict.WAIT:
                continue
            if await self._apply_verdict(d.model, d.canary.version, verdict, reason):
                self.metrics.canary_verdicts.labels(verdict.value).inc()
                log.warning(
                    "canary v%d of models/%s: %s (%s)",
                    d.canary.version,
                    d.model,
                    verdict.value,
                    reason,
                    extra={"principal": JUDGE_ACTOR},
                )
                decisions.append((d.model, verdict, reason))
        return decisions

    async def _apply_verdict(self, model: str, canary: int, verdict: dd.Verdict, reason: str) -> bool:
        async with self.store.locked(model) as tx:
            if not dd.verdict_applies(tx.deployment, canary):
                return False  # replaced or stopped since it was judged (another replica?)
            if verdict == dd.Verdict.ABORT:
                plan = dd.plan_abort_canary(tx.deployment, reason, JUDGE_ACTOR, dd.Action.AUTO_ABORT)
            else:
                plan = dd.plan_promote_canary(
                    tx.deployment, await tx.version(canary), reason, JUDGE_ACTOR, dd.Action.AUTO_PROMOTE
                )
                try:
                    await self.gates.enforce(tx.conn, JUDGE, model, canary, "production", action="be auto-promoted to")
                except GateFailed as e:
                    if (model, canary) not in self._blocked:  # once per canary, not every pass
                        self._blocked.add((model, canary))
                        log.warning("%s; the canary keeps running", e.message, extra={"principal": JUDGE_ACTOR})
                    return False
            await tx.persist(plan, JUDGE_ACTOR)
        return True
