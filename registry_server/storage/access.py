"""SQL for identity and access: projects, principals, hashed tokens, role bindings.

Every write emits an ACCESS_CHANGED event in its transaction (through the outbox), so
every replica drops its cached tokens and bindings when the event arrives, and the change
is in the audit trail. Secrets never reach this module: only their sha256.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from registry_server.domain.access import ADMIN, GLOBAL, Binding
from registry_server.domain.events import EventDraft
from registry_server.errors import AlreadyExists, FailedPrecondition, NotFound
from registry_server.storage.outbox import Outbox

ACCESS_CHANGED = "ACCESS_CHANGED"


@dataclass(frozen=True)
class Project:
    name: str
    description: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class Principal:
    name: str
    service_account: bool
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class Token:
    name: str
    principal: str
    hash: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


def _project(r: asyncpg.Record) -> Project:
    return Project(r["name"], r["description"], r["created_by"], r["created_at"])


def _principal(r: asyncpg.Record) -> Principal:
    return Principal(r["name"], r["service_account"], r["created_by"], r["created_at"])


def _token(r: asyncpg.Record) -> Token:
    return Token(
        r["name"],
        r["principal"],
        r["hash"],
        r["created_by"],
        r["created_at"],
        r["expires_at"],
        r["last_used_at"],
        r["revoked_at"],
    )


def _binding(r: asyncpg.Record) -> Binding:
    return Binding(r["principal"], r["role"], r["project"], r["created_at"], r["created_by"])


class AccessStore:
    def __init__(self, outbox: Outbox):
        self.outbox = outbox
        self.pool = outbox.pool

    async def _changed(self, conn: asyncpg.Connection, actor: str, kind: str, **details: Any) -> int:
        """The ACCESS_CHANGED event; the last statement of the transaction."""
        return await self.outbox.emit(conn, actor, [EventDraft(ACCESS_CHANGED, "", details={"kind": kind, **details})])

    # ---------------------------------------------------------------- projects

    async def create_project(self, name: str, description: str, actor: str) -> Project:
        async with self.outbox.transaction() as conn:
            row = await conn.fetchrow(
                "INSERT INTO projects (name, description, created_by) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING *",
                name,
                description,
                actor,
            )
            if row is None:
                raise AlreadyExists(f"project {name!r} already exists; pick another name")
            await self._changed(conn, actor, "project_created", project=name)
            return _project(row)

    async def get_project(self, name: str) -> Project | None:
        row = await self.pool.fetchrow("SELECT * FROM projects WHERE name = $1", name)
        return _project(row) if row else None

    async def list_projects(self, after: str, limit: int, within: frozenset[str] | None) -> list[Project]:
        rows = await self.pool.fetch(
            "SELECT * FROM projects WHERE name > $1 AND ($2::text[] IS NULL OR name = ANY($2)) ORDER BY name LIMIT $3",
            after,
            sorted(within) if within is not None else None,
            limit,
        )
        return [_project(r) for r in rows]

    async def delete_project(self, name: str, actor: str) -> int:
        """Deletes a project with its bindings; returns how many bindings went with it."""
        async with self.outbox.transaction() as conn:
            models = await conn.fetchval("SELECT count(*) FROM models WHERE project = $1", name)
            if models:
                raise FailedPrecondition(
                    f"project {name!r} still owns {models} model(s); delete them first (modelreg models list "
                    f"--project {name})"
                )
            bindings = int((await conn.execute("DELETE FROM role_bindings WHERE project = $1", name)).split()[-1])
            status = await conn.execute("DELETE FROM projects WHERE name = $1", name)
            if status.endswith(" 0"):
                raise NotFound(f"project {name!r} does not exist; list them with 'modelreg projects list'")
            await self._changed(conn, actor, "project_deleted", project=name)
            return bindings

    # ---------------------------------------------------------------- principals

    async def create_principal(self, name: str, service_account: bool, actor: str) -> Principal:
        async with self.outbox.transaction() as conn:
            row = await conn.fetchrow(
                "INSERT INTO principals (name, service_account, created_by) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING *",
                name,
                service_account,
                actor,
            )
            if row is None:
                raise AlreadyExists(f"principal {name!r} already exists; pick another name")
            await self._changed(conn, actor, "principal_created", principal=name)
            return _principal(row)

    async def get_principal(self, name: str) -> Principal | None:
        row = await self.pool.fetchrow("SELECT * FROM principals WHERE name = $1", name)
        return _principal(row) if row else None

    async def list_principals(self, after: str, limit: int) -> list[Principal]:
        rows = await self.pool.fetch("SELECT * FROM principals WHERE name > $1 ORDER BY name LIMIT $2", after, limit)
        return [_principal(r) for r in rows]

    # ---------------------------------------------------------------- tokens

    async def create_token(
        self, name: str, principal: str, digest: str, expires_at: datetime | None, actor: str
    ) -> Token:
        async with self.outbox.transaction() as conn:
            if await conn.fetchval("SELECT 1 FROM principals WHERE name = $1", principal) is None:
                raise NotFound(
                    f"principal {principal!r} does not exist; create it with 'modelreg principals create {principal}'"
                )
            row = await conn.fetchrow(
                "INSERT INTO api_tokens (name, principal, hash, expires_at, created_by) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (name) DO NOTHING RETURNING *",
                name,
                principal,
                digest,
                expires_at,
                actor,
            )
            if row is None:
                raise AlreadyExists(f"token {name!r} already exists; token names are unique, pick another")
            await self._changed(conn, actor, "token_created", token=name, principal=principal)
            return _token(row)

    async def token_by_hash(self, digest: str) -> Token | None:
        row = await self.pool.fetchrow("SELECT * FROM api_tokens WHERE hash = $1", digest)
        return _token(row) if row else None

    async def list_tokens(self, principal: str, after: str, limit: int) -> list[Token]:
        rows = await self.pool.fetch(
            "SELECT * FROM api_tokens WHERE name > $1 AND ($2 = '' OR principal = $2) ORDER BY name LIMIT $3",
            after,
            principal,
            limit,
        )
        return [_token(r) for r in rows]

    async def revoke_token(self, name: str, actor: str) -> Token:
        async with self.outbox.transaction() as conn:
            row = await conn.fetchrow(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE name = $1 RETURNING *", name
            )
            if row is None:
                raise NotFound(f"token {name!r} does not exist; list them with 'modelreg tokens list'")
            await self._changed(conn, actor, "token_revoked", token=name, principal=row["principal"])
            return _token(row)

    async def touch_tokens(self, used: dict[str, datetime]) -> None:
        """Records last-use times (no event: nothing cached depends on them)."""
        if used:
            await self.pool.execute(
                "UPDATE api_tokens t SET last_used_at = u.at FROM unnest($1::text[], $2::timestamptz[]) AS u(name, at)"
                " WHERE t.name = u.name AND (t.last_used_at IS NULL OR t.last_used_at < u.at)",
                list(used),
                list(used.values()),
            )

    # ---------------------------------------------------------------- bindings

    async def grant(self, b: Binding, actor: str) -> Binding:
        async with self.outbox.transaction() as conn:
            if await conn.fetchval("SELECT 1 FROM principals WHERE name = $1", b.principal) is None:
                raise NotFound(
                    f"principal {b.principal!r} does not exist; create it with "
                    f"'modelreg principals create {b.principal}'"
                )
            if b.project != GLOBAL and await conn.fetchval("SELECT 1 FROM projects WHERE name = $1", b.project) is None:
                raise NotFound(
                    f"project {b.project!r} does not exist; create it with 'modelreg projects create {b.project}'"
                )
            row = await conn.fetchrow(
                "INSERT INTO role_bindings (principal, role, project, created_by) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING RETURNING *",
                b.principal,
                b.role,
                b.project,
                actor,
            )
            if row is None:  # already granted: nothing changes, no event
                row = await conn.fetchrow(
                    "SELECT * FROM role_bindings WHERE principal = $1 AND role = $2 AND project = $3",
                    b.principal,
                    b.role,
                    b.project,
                )
                return _binding(row)
            await self._changed(conn, actor, "role_granted", principal=b.principal, role=b.role, project=b.project)
            return _binding(row)

    async def revoke(self, b: Binding, actor: str) -> bool:
        async with self.outbox.transaction() as conn:
            status = await conn.execute(
                "DELETE FROM role_bindings WHERE principal = $1 AND role = $2 AND project = $3",
                b.principal,
                b.role,
                b.project,
            )
            if status.endswith(" 0"):
                return False
            await self._changed(conn, actor, "role_revoked", principal=b.principal, role=b.role, project=b.project)
            return True

    async def all_bindings(self) -> list[Binding]:
        return [_binding(r) for r in await self.pool.fetch("SELECT * FROM role_bindings")]

    async def list_bindings(
        self,
        project: str | None,
        principal: str,
        after: tuple[str, str, str],
        limit: int,
        within: frozenset[str] | None,
    ) -> list[Binding]:
        """Bindings in (project, principal, role) order after `after`; of `project` when
        not None, of `principal` when set, of the projects in `within` when not None."""
        rows = await self.pool.fetch(
            "SELECT * FROM role_bindings WHERE (project, principal, role) > ($1, $2, $3)"
            " AND ($4::text IS NULL OR project = $4) AND ($5 = '' OR principal = $5)"
            " AND ($6::text[] IS NULL OR project = ANY($6)) ORDER BY project, principal, role LIMIT $7",
            *after,
            project,
            principal,
            sorted(within) if within is not None else None,
            limit,
        )
        return [_binding(r) for r in rows]

    # ---------------------------------------------------------------- bootstrap

    async def bootstrap_admin(
        self, principal: str, token_name: str, digest: str, keep_secret: Callable[[], None]
    ) -> bool:
        """Creates the first admin and its token, once in the database's life: only when no
        bootstrap happened before and no admin binding exists. `keep_secret` (writing the
        token file) runs before the commit, so a failure there leaves nothing half done.
        Returns whether it bootstrapped."""
        async with self.outbox.transaction() as conn:
            first = await conn.fetchval(
                "INSERT INTO auth_bootstrap (id) VALUES (1) ON CONFLICT DO NOTHING RETURNING id"
            )
            if first is None:
                return False
            if await conn.fetchval("SELECT 1 FROM role_bindings WHERE role = $1", ADMIN) is not None:
                return False
            await conn.execute(
                "INSERT INTO principals (name, created_by) VALUES ($1, 'modelreg') ON CONFLICT DO NOTHING", principal
            )
            await conn.execute(
                "INSERT INTO role_bindings (principal, role, project, created_by) VALUES ($1, $2, '', 'modelreg')"
                " ON CONFLICT DO NOTHING",
                principal,
                ADMIN,
            )
            await conn.execute(
                "INSERT INTO api_tokens (name, principal, hash, created_by) VALUES ($1, $2, $3, 'modelreg')",
                token_name,
                principal,
                digest,
            )
            keep_secret()
            await self._changed(conn, "modelreg", "bootstrap", principal=principal, token=token_name)
            return True
