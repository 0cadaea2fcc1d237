"""Use cases of identity: who am I, may I, and the admin's projects, principals, tokens and
role bindings. Every method takes the caller and checks it first (through `Access`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from registry_server.domain.access import (
    ADMIN,
    ANONYMOUS,
    DEFAULT_PROJECT,
    GLOBAL,
    GLOBAL_PERMISSIONS,
    VERBS,
    Binding,
    Caller,
    Permission,
    check_role,
    validate_id,
    validate_ttl,
)
from registry_server.errors import (
    FailedPrecondition,
    InvalidArgument,
    ModelNotFound,
    NotFound,
    PermissionDenied,
    StartupError,
)
from registry_server.storage.access import AccessStore, Principal, Project, Token
from registry_server.usecases.access import Access, digest, new_secret

log = logging.getLogger(__name__)

P = Permission
BOOTSTRAP_PRINCIPAL = "admin"
BOOTSTRAP_TOKEN = "admin-bootstrap"
TOKEN_FILE = "admin.token"


@dataclass(frozen=True)
class WhoAmI:
    principal: Principal
    bindings: tuple[Binding, ...]
    token: Token | None
    authenticated_by: str
    auth_enabled: bool


@dataclass(frozen=True)
class AccessCheck:
    allowed: bool
    permission: Permission
    project: str
    principal: str
    reason: str


class Identity:
    def __init__(self, store: AccessStore, access: Access):
        self.store = store
        self.access = access

    # ---------------------------------------------------------------- who and may

    async def whoami(self, caller: Caller) -> WhoAmI:
        now = datetime.now(UTC)
        principal = await self.store.get_principal(caller.principal) if caller.authenticated else None
        principal = principal or Principal(caller.principal, False, "", now)
        token = None
        if caller.token_hash:
            token = await self.store.token_by_hash(caller.token_hash)
        grants = await self.access.grants_of(caller.principal) if caller.authenticated else None
        return WhoAmI(
            principal=principal,
            bindings=grants.bindings if grants else (),
            token=token,
            authenticated_by=caller.via,
            auth_enabled=self.access.enabled,
        )

    async def check_access(self, caller: Caller, verb: str, resource: str, project: str) -> AccessCheck:
        permission = _permission(verb, resource)
        where = ""
        if permission not in GLOBAL_PERMISSIONS:
            where = await self._resource_project(resource, project)
        allowed = caller.allows(permission, where)
        reason = ""
        if not allowed:
            scope = "globally" if permission in GLOBAL_PERMISSIONS else f"in project {where!r}"
            reason = f"principal {caller.principal!r} lacks permission {permission.value!r} {scope}"
        return AccessCheck(allowed, permission, where, caller.principal, reason)

    async def _resource_project(self, resource: str, project: str) -> str:
        parts = (resource or "").strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "models":
            try:
                return await self.access.project_of(parts[1])
            except ModelNotFound:
                raise NotFound(
                    f"model {parts[1]!r} does not exist; ask about the collection instead: 'models --project P'"
                ) from None
        if len(parts) == 2 and parts[0] == "projects":
            return validate_id(parts[1], "project")
        if parts[0] in ("models", "projects", "principals", "tokens", "roles") and len(parts) == 1:
            return validate_id(project, "project") if project else DEFAULT_PROJECT
        raise InvalidArgument(
            f"unknown resource {resource!r}: use models/NAME, models (with a project), projects/NAME, principals "
            "or tokens"
        )

    # ---------------------------------------------------------------- projects

    async def create_project(self, caller: Caller, name: str, description: str) -> Project:
        await self.access.require(caller, P.MANAGE_PROJECTS)
        return await self.store.create_project(validate_id(name, "project"), description, caller.name)

    async def list_projects(self, caller: Caller, after: str, limit: int) -> list[Project]:
        within = None
        if caller.authenticated:
            grants = await self.access.grants_of(caller.principal)
            within = None if grants.admin else frozenset(grants.by_project)
        return await self.store.list_projects(after, limit, within)

    async def delete_project(self, caller: Caller, name: str) -> int:
        await self.access.require(caller, P.MANAGE_PROJECTS)
        if name == DEFAULT_PROJECT:
            raise FailedPrecondition("the default project cannot be deleted")
        return await self.store.delete_project(validate_id(name, "project"), caller.name)

    # ---------------------------------------------------------------- principals

    async def create_principal(self, caller: Caller, name: str, service_account: bool) -> Principal:
        await self.access.require(caller, P.MANAGE_PRINCIPALS)
        if name == ANONYMOUS:
            raise InvalidArgument(f"{ANONYMOUS!r} is reserved for callers with auth off; pick another name")
        return await self.store.create_principal(validate_id(name, "principal"), service_account, caller.name)

    async def list_principals(self, caller: Caller, after: str, limit: int) -> list[Principal]:
        await self.access.require(caller, P.MANAGE_PRINCIPALS)
        return await self.store.list_principals(after, limit)

    # ---------------------------------------------------------------- tokens

    async def create_token(self, caller: Caller, name: str, principal: str, ttl: timedelta | None) -> tuple[str, Token]:
        """A new token: (its secret, shown only now; its record)."""
        await self.access.require(caller, P.MANAGE_TOKENS)
        validate_ttl(ttl)
        secret = new_secret()
        expires = datetime.now(UTC) + ttl if ttl is not None else None
        token = await self.store.create_token(
            validate_id(name, "token name"), validate_id(principal, "principal"), digest(secret), expires, caller.name
        )
        log.info("token %s created for %s", token.name, token.principal, extra={"principal": caller.name})
        return secret, token

    async def list_tokens(self, caller: Caller, principal: str, after: str, limit: int) -> list[Token]:
        await self.access.require(caller, P.MANAGE_TOKENS)
        return await self.store.list_tokens(principal, after, limit)

    async def revoke_token(self, caller: Caller, name: str) -> Token:
        await self.access.require(caller, P.MANAGE_TOKENS)
        token = await self.store.revoke_token(name, caller.name)
        self.access.invalidate()
        log.info("token %s revoked", token.name, extra={"principal": caller.name})
        return token

    # ---------------------------------------------------------------- role bindings

    async def _binding(self, caller: Caller, principal: str, role: str, project: str) -> Binding:
        check_role(role)
        validate_id(principal, "principal")
        if role == ADMIN:
            if project:
                raise InvalidArgument("admin is a global role: leave the project empty")
            where = GLOBAL
        else:
            where = validate_id(project, "project") if project else DEFAULT_PROJECT
        if caller.authenticated:
            grants = await self.access.grants_of(caller.principal)
            if not grants.may_grant(role, where):
                scope = "globally" if where == GLOBAL else f"in project {where!r}"
                raise PermissionDenied(
                    f"principal {caller.principal!r} may not grant or revoke role {role!r} {scope}: that needs "
                    f"permission 'roles.grant' there and every permission of {role!r} (no escalation)"
                    if role != ADMIN
                    else f"principal {caller.principal!r} may not grant or revoke role 'admin': only an admin may"
                )
        return Binding(principal, role, where)

    async def grant_role(self, caller: Caller, principal: str, role: str, project: str) -> Binding:
        b = await self.store.grant(await self._binding(caller, principal, role, project), caller.name)
        self.access.invalidate()
        return b

    async def revoke_role(self, caller: Caller, principal: str, role: str, project: str) -> bool:
        removed = await self.store.revoke(await self._binding(caller, principal, role, project), caller.name)
        self.access.invalidate()
        return removed

    async def list_bindings(
        self, caller: Caller, project: str, principal: str, after: tuple[str, str, str], limit: int
    ) -> list[Binding]:
        within = None
        if caller.authenticated:
            grants = await self.access.grants_of(caller.principal)
            if not grants.admin:
                within = frozenset(p for p, perms in grants.by_project.items() if P.GRANT in perms)
                if project:
                    caller.require(P.GRANT, project)
                elif not within:
                    raise PermissionDenied(
                        f"principal {caller.principal!r} lacks permission 'roles.grant' in every project; "
                        "project-admins list their project's bindings, admins all"
                    )
        return await self.store.list_bindings(project or None, principal, after, limit, within)

    # ---------------------------------------------------------------- bootstrap

    async def bootstrap(self, data_dir: Path) -> Path | None:
        """With auth on and no admin yet: creates principal `admin` with one token and writes
        the secret to `<data_dir>/admin.token` (mode 0600). Once in the database's life.
        Returns the file's path when it did, else None.

        The secret is written to a hidden file before the commit (a failure to write it
        leaves nothing done) and renamed to `admin.token` after it, so THE FILE APPEARS ONLY
        ONCE ITS TOKEN IS VALID: a script waiting for the file never gets "unknown token"."""
        path = data_dir / TOKEN_FILE
        tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
        secret = new_secret()

        def keep_secret() -> None:
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, (secret + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)

        try:
            done = await self.store.bootstrap_admin(BOOTSTRAP_PRINCIPAL, BOOTSTRAP_TOKEN, digest(secret), keep_secret)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if not done:
            return None
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise StartupError(
                f"created principal 'admin' but could not move its token file {tmp} to {path} ({e.strerror or e}); "
                "move it there by hand"
            ) from None
        self.access.invalidate()
        return path


_ADMIN_COLLECTIONS = {"principals": P.MANAGE_PRINCIPALS, "tokens": P.MANAGE_TOKENS}


def _permission(verb: str, resource: str) -> Permission:
    """The permission `verb` needs on `resource`: creating, listing or revoking principals
    and tokens, and creating or deleting projects, are the admin's."""
    v = (verb or "").strip().lower()
    base = (resource or "").strip("/").split("/")[0]
    if base in _ADMIN_COLLECTIONS and v in ("create", "delete", "list", "get", "read", "revoke", "update"):
        return _ADMIN_COLLECTIONS[base]
    if base == "projects" and v in ("create", "delete"):
        return P.MANAGE_PROJECTS
    if v in VERBS:
        return VERBS[v]
    try:
        return Permission(v)
    except ValueError:
        raise InvalidArgument(
            f"unknown verb {verb!r}: use one of {', '.join(VERBS)}, or a permission such as 'versions.promote'"
        ) from None
