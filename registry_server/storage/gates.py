"""SQL for gate policies, promotion requests and their approvals, and the facts a gate
evaluation reads: metrics, the target's current holder, card status, past holders.

Reads that feed a decision take the caller's connection: they run inside the promotion's
transaction, under the model's row lock (DeploymentStore.locked), so what was evaluated is
what gets committed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import asyncpg

from registry_server.domain.events import EventDraft
from registry_server.domain.gates import STAGE_TARGETS, GatePolicy, Holder
from registry_server.domain.signatures import Signature
from registry_server.storage.outbox import Outbox

GATE_POLICY_CHANGED = "GATE_POLICY_CHANGED"
PROMOTION_REQUEST_CHANGED = "PROMOTION_REQUEST_CHANGED"

Conn: TypeAlias = "asyncpg.Connection | asyncpg.Pool"


@dataclass(frozen=True)
class StoredPolicy:
    model: str
    policy: GatePolicy
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class Approval:
    principal: str
    approved: bool
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class Request:
    id: int
    model: str
    version: int
    target: str
    state: str  # as stored; `effective_state` says expired for a pending one past its time
    requester: str
    reason: str
    required: int
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    approvals: tuple[Approval, ...] = field(default=())

    def effective_state(self, now: datetime) -> str:
        return "expired" if self.state == "pending" and self.expires_at <= now else self.state

    @property
    def approvers(self) -> list[str]:
        return [a.principal for a in self.approvals if a.approved]


def _stored(r: asyncpg.Record) -> StoredPolicy:
    return StoredPolicy(r["model"], GatePolicy.from_dict(r["policy"]), r["updated_by"], r["updated_at"])


def _request(r: asyncpg.Record, approvals: tuple[Approval, ...] = ()) -> Request:
    return Request(
        r["id"],
        r["model"],
        r["version"],
        r["target"],
        r["state"],
        r["requester"],
        r["reason"],
        r["required_approvals"],
        r["created_at"],
        r["expires_at"],
        r["closed_at"],
        approvals,
    )


def _floats(metrics: Any) -> dict[str, float]:
    return {k: float(v) for k, v in (metrics or {}).items()}


# The policy, and only when there is one, the facts it is evaluated on: the candidate's
# metrics and card status, and the target's current holder (production; the newest staging
# version; the alias's version) as [version, metrics]. The card row is share-locked: an
# edit in flight finishes before (or waits for) the promotion that read its status.
_FACTS = """
SELECT g.policy,
       (SELECT v.metrics FROM model_versions v WHERE v.model = $1 AND v.version = $2) AS metrics,
       (SELECT v.signature FROM model_versions v WHERE v.model = $1 AND v.version = $2) AS signature,
       (SELECT json_build_array(v.version, v.metrics, v.signature) FROM model_versions v
        WHERE v.model = $1 AND v.stage = 'production' AND v.version <> $2) AS production,
       (SELECT c.status FROM model_cards c WHERE c.model = $1 AND c.version = $2 FOR SHARE) AS card,
       CASE $3
         WHEN 'production' THEN (SELECT json_build_array(v.version, v.metrics) FROM model_versions v
                                 WHERE v.model = $1 AND v.stage = 'production' AND v.version <> $2)
         WHEN 'staging' THEN (SELECT json_build_array(v.version, v.metrics) FROM model_versions v
                              WHERE v.model = $1 AND v.stage = 'staging' AND v.version <> $2
                              ORDER BY v.version DESC LIMIT 1)
         ELSE (SELECT json_build_array(v.version, v.metrics) FROM model_aliases a JOIN model_versions v
               ON v.model = a.model AND v.version = a.version
               WHERE a.model = $1 AND a.alias = $3 AND v.version <> $2)
       END AS holder
FROM gate_policies g WHERE g.model = $1 AND g.target = $3
"""


@dataclass(frozen=True)
class Facts:
    """What an evaluation reads (see GateStore.facts)."""

    policy: GatePolicy
    metrics: dict[str, float]
    card: str | None
    holder: Holder | None
    signature: Signature | None
    production: Holder | None


class GateStore:
    def __init__(self, outbox: Outbox):
        self.outbox = outbox
        self.pool = outbox.pool

    # ---------------------------------------------------------------- policies

    async def policies(self, model: str, target: str = "") -> list[StoredPolicy]:
        rows = await self.pool.fetch(
            "SELECT * FROM gate_policies WHERE model = $1 AND ($2 = '' OR target = $2) ORDER BY target", model, target
        )
        return [_stored(r) for r in rows]

    async def set_policy(self, model: str, policy: GatePolicy, actor: str) -> StoredPolicy:
        """Sets a target's policy, replacing the previous one."""
        _, stored = await self._write(model, policy.target, policy, actor)
        assert stored is not None
        return stored

    async def clear_policy(self, model: str, target: str, actor: str) -> bool:
        """Removes a target's policy; False (and nothing written) when it had none."""
        written, _ = await self._write(model, target, None, actor)
        return written

    async def _write(
        self, model: str, target: str, policy: GatePolicy | None, actor: str
    ) -> tuple[bool, StoredPolicy | None]:
        """Sets or (with None) clears a policy, recording before and after in the history
        and emitting GATE_POLICY_CHANGED. Returns (whether anything was written: not for
        clearing a target without a policy, the stored policy or None once cleared)."""
        async with self.outbox.transaction() as conn:
            await conn.execute("SELECT 1 FROM models WHERE name = $1 FOR UPDATE", model)
            before = await conn.fetchval(
                "SELECT policy FROM gate_policies WHERE model = $1 AND target = $2", model, target
            )
            row = None
            if policy is None:
                if before is None:
                    return False, None
                await conn.execute("DELETE FROM gate_policies WHERE model = $1 AND target = $2", model, target)
            else:
                row = await conn.fetchrow(
                    "INSERT INTO gate_policies (model, target, policy, updated_by) VALUES ($1, $2, $3, $4)"
                    " ON CONFLICT (model, target) DO UPDATE SET policy = EXCLUDED.policy,"
                    " updated_by = EXCLUDED.updated_by, updated_at = now() RETURNING *",
                    model,
                    target,
                    policy.as_dict(),
                    actor,
                )
            after = policy.as_dict() if policy is not None else None
            seq = await self.outbox.emit(
                conn,
                actor,
                [EventDraft(GATE_POLICY_CHANGED, model, details={"target": target, "before": before, "after": after})],
            )
            await conn.execute(
                "INSERT INTO gate_policy_history (model, target, before, after, actor, sequence)"
                " VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6)",
                model,
                target,
                json.dumps(before) if before is not None else None,
                json.dumps(after) if after is not None else None,
                actor,
                seq,
            )
            return True, (_stored(row) if row is not None else None)

    # ---------------------------------------------------------------- facts for an evaluation

    async def facts(self, conn: Conn, model: str, version: int, target: str) -> Facts | None:
        """In one round trip: the target's policy, the version's metrics, signature and card
        status, the holder of the target now (other than `version`) with its metrics, and the
        production version (other than `version`) with its signature. None without a policy
        (then nothing else is read)."""
        row = await conn.fetchrow(_FACTS, model, version, target)
        if row is None:
            return None
        holder = production = None
        if row["holder"] is not None:
            number, metrics = row["holder"]
            holder = Holder(int(number), _floats(metrics))
        if row["production"] is not None:
            number, metrics, sig = row["production"]
            production = Holder(int(number), _floats(metrics), Signature.from_dict(sig) if sig else None)
        signature = Signature.from_dict(row["signature"]) if row["signature"] else None
        return Facts(
            GatePolicy.from_dict(row["policy"]), _floats(row["metrics"]), row["card"], holder, signature, production
        )

    async def once_held(self, conn: Conn, model: str, version: int, target: str) -> bool:
        if target in STAGE_TARGETS:
            sql = "SELECT 1 FROM stage_transitions WHERE model = $1 AND version = $2 AND to_stage = $3 LIMIT 1"
        else:
            sql = "SELECT 1 FROM alias_history WHERE model = $1 AND to_version = $2 AND alias = $3 LIMIT 1"
        return await conn.fetchval(sql, model, version, target) is not None

    # ---------------------------------------------------------------- requests

    async def _approvals(self, conn: Conn, ids: list[int]) -> dict[int, tuple[Approval, ...]]:
        rows = await conn.fetch(
            "SELECT * FROM promotion_approvals WHERE request = ANY($1::bigint[]) ORDER BY created_at, principal", ids
        )
        out: dict[int, list[Approval]] = {}
        for r in rows:
            out.setdefault(r["request"], []).append(
                Approval(r["principal"], r["approved"], r["reason"], r["created_at"])
            )
        return {k: tuple(v) for k, v in out.items()}

    async def pending(self, conn: Conn, model: str, target: str, lock: bool = True) -> Request | None:
        """The pending request for a target, its row locked to the end of the transaction
        unless `lock` is false."""
        row = await conn.fetchrow(
            "SELECT * FROM promotion_requests WHERE model = $1 AND target = $2 AND state = 'pending'"
            + (" FOR UPDATE" if lock else ""),
            model,
            target,
        )
        if row is None:
            return None
        return _request(row, (await self._approvals(conn, [row["id"]])).get(row["id"], ()))

    async def create_request(
        self,
        conn: asyncpg.Connection,
        model: str,
        version: int,
        target: str,
        requester: str,
        reason: str,
        required: int,
        ttl: timedelta,
    ) -> tuple[Request, list[Request]]:
        """A new pending request; an older pending one for the target is superseded.
        Returns (the new request, the superseded ones). The caller emits the events."""
        old = await conn.fetch(
            "UPDATE promotion_requests SET state = 'superseded', closed_at = now()"
            " WHERE model = $1 AND target = $2 AND state = 'pending' RETURNING *",
            model,
            target,
        )
        row = await conn.fetchrow(
            "INSERT INTO promotion_requests (model, version, target, requester, reason, required_approvals, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, now() + $7::interval) RETURNING *",
            model,
            version,
            target,
            requester,
            reason,
            required,
            ttl,
        )
        return _request(row), [_request(r) for r in old]

    async def add_decision(
        self, conn: asyncpg.Connection, request: Request, principal: str, approved: bool, reason: str
    ) -> Request:
        await conn.execute(
            "INSERT INTO promotion_approvals (request, principal, approved, reason) VALUES ($1, $2, $3, $4)",
            request.id,
            principal,
            approved,
            reason,
        )
        return await self.reload(conn, request.id)

    async def close(self, conn: asyncpg.Connection, request: Request, state: str) -> Request:
        await conn.execute(
            "UPDATE promotion_requests SET state = $2, closed_at = now() WHERE id = $1", request.id, state
        )
        return await self.reload(conn, request.id)

    async def reload(self, conn: Conn, request_id: int) -> Request:
        row = await conn.fetchrow("SELECT * FROM promotion_requests WHERE id = $1", request_id)
        return _request(row, (await self._approvals(conn, [request_id])).get(request_id, ()))

    async def list_requests(
        self, model: str, state: str, before_id: int, limit: int, within: frozenset[str] | None
    ) -> list[Request]:
        """Newest first. `state` 'expired' means pending past its time; 'pending' excludes those."""
        rows = await self.pool.fetch(
            "SELECT r.* FROM promotion_requests r JOIN models m ON m.name = r.model"
            " WHERE r.id < $1 AND ($2 = '' OR r.model = $2)"
            " AND ($3 = '' OR ($3 = 'expired' AND r.state = 'pending' AND r.expires_at <= now())"
            "      OR ($3 = 'pending' AND r.state = 'pending' AND r.expires_at > now())"
            "      OR ($3 NOT IN ('expired', 'pending') AND r.state = $3))"
            " AND ($4::text[] IS NULL OR m.project = ANY($4)) ORDER BY r.id DESC LIMIT $5",
            before_id,
            model,
            state,
            sorted(within) if within is not None else None,
            limit,
        )
        approvals = await self._approvals(self.pool, [r["id"] for r in rows])
        return [_request(r, approvals.get(r["id"], ())) for r in rows]

    def request_event(self, request: Request, state: str) -> EventDraft:
        return EventDraft(
            PROMOTION_REQUEST_CHANGED,
            request.model,
            request.version,
            details={"request": request.id, "target": request.target, "state": state},
        )
