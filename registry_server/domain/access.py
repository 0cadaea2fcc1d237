"""Identity and access, as pure rules: permissions, roles, callers, and whether a caller may.

The shape is Kubernetes RBAC's: additive role bindings, deny by default. Every permission
is checked in a project (`GLOBAL` for the admin-only ones); a binding grants its role's
permissions in its project, and `admin` grants every permission everywhere. The table
below is the one place a role's permissions are written (issue 11's table).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from registry_server.errors import InvalidArgument, PermissionDenied

DEFAULT_PROJECT = "default"
GLOBAL = ""  # the "project" of admin-only permissions and of the admin binding
ANONYMOUS = "anonymous"

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Permission(StrEnum):
    # Read (viewer, and the agent role).
    READ = "models.read"  # models, versions, history, compare, deployments, agent status
    DOWNLOAD = "artifacts.download"
    WATCH = "events.watch"
    # Train.
    CREATE_MODEL = "models.create"
    REGISTER = "versions.register"
    UPDATE_MODEL = "models.update"
    UPDATE_VERSION = "versions.update"
    # Release.
    PROMOTE = "versions.promote"
    CANARY = "deployments.canary"
    ROLLBACK = "deployments.rollback"
    SET_POLICY = "deployments.policy"
    # Governance.
    APPROVE = "promotions.approve"  # approve or reject promotion requests, approve model cards
    SET_ALIAS = "aliases.set"  # set, move or delete an unprotected alias (a protected one needs PROMOTE)
    # Webhooks (issue 15): their URLs may carry a receiver's token, so viewers do not read them.
    READ_WEBHOOKS = "webhooks.read"  # list and get webhooks, list their deliveries
    # Project admin.
    DELETE_MODEL = "models.delete"
    DELETE_VERSION = "versions.delete"
    GRANT = "roles.grant"
    MANAGE_WEBHOOKS = "webhooks.manage"  # create and delete webhooks, redeliver
    # Agents.
    REPORT = "agents.report"
    # Admin only (global).
    MANAGE_PROJECTS = "projects.manage"
    MANAGE_PRINCIPALS = "principals.manage"
    MANAGE_TOKENS = "tokens.manage"


P = Permission
GLOBAL_PERMISSIONS = frozenset({P.MANAGE_PROJECTS, P.MANAGE_PRINCIPALS, P.MANAGE_TOKENS})
_VIEW = frozenset({P.READ, P.DOWNLOAD, P.WATCH})

ROLES: dict[str, frozenset[Permission]] = {
    "viewer": _VIEW,
    "trainer": _VIEW | {P.CREATE_MODEL, P.REGISTER, P.UPDATE_MODEL, P.UPDATE_VERSION, P.SET_ALIAS},
    "agent": frozenset({P.WATCH, P.READ, P.DOWNLOAD, P.REPORT}),
    "releaser": _VIEW | {P.PROMOTE, P.CANARY, P.ROLLBACK, P.SET_POLICY, P.APPROVE, P.SET_ALIAS, P.READ_WEBHOOKS},
    "project-admin": frozenset(p for p in Permission if p not in GLOBAL_PERMISSIONS),
    "admin": frozenset(Permission),
}
ADMIN = "admin"

# `modelreg auth can-i VERB RESOURCE`: the verbs and the permission each needs.
VERBS: dict[str, Permission] = {
    "read": P.READ,
    "get": P.READ,
    "list": P.READ,
    "download": P.DOWNLOAD,
    "watch": P.WATCH,
    "create": P.CREATE_MODEL,
    "register": P.REGISTER,
    "update": P.UPDATE_MODEL,
    "delete": P.DELETE_MODEL,
    "promote": P.PROMOTE,
    "canary": P.CANARY,
    "rollback": P.ROLLBACK,
    "set-policy": P.SET_POLICY,
    "report": P.REPORT,
    "grant": P.GRANT,
    "approve": P.APPROVE,
    "alias": P.SET_ALIAS,
}


def validate_id(value: str, what: str) -> str:
    if not _ID.fullmatch(value or ""):
        raise InvalidArgument(
            f"invalid {what} {value!r}: use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


# A token lives at most this long: an expiry Postgres can store, and a lifetime an
# operator can reason about (unset means "never expires").
MAX_TOKEN_TTL = timedelta(days=36500)


def validate_ttl(ttl: timedelta | None) -> timedelta | None:
    if ttl is not None and ttl <= timedelta(0):
        raise InvalidArgument("ttl must be positive; leave it unset for a token that never expires")
    if ttl is not None and ttl > MAX_TOKEN_TTL:
        raise InvalidArgument(
            f"ttl of {ttl.days} days is longer than the {MAX_TOKEN_TTL.days} days (100 years) allowed; "
            "give a shorter ttl, or leave it unset for a token that never expires"
        )
    return ttl


def project_of(value: str) -> str:
    """A model's project: empty means `default`."""
    return value or DEFAULT_PROJECT


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidArgument(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class Binding:
    principal: str
    role: str
    project: str  # GLOBAL for admin
    created_at: datetime | None = None
    created_by: str = ""


@dataclass(frozen=True)
class Grants:
    """What one principal may do: its bindings, indexed."""

    bindings: tuple[Binding, ...] = ()
    by_project: dict[str, frozenset[Permission]] = field(default_factory=dict)
    admin: bool = False

    @classmethod
    def of(cls, bindings: Iterable[Binding]) -> Grants:
        bs = tuple(bindings)
        by: dict[str, set[Permission]] = {}
        for b in bs:
            by.setdefault(b.project, set()).update(ROLES.get(b.role, ()))
        return cls(bs, {k: frozenset(v) for k, v in by.items()}, any(b.role == ADMIN for b in bs))

    def allows(self, permission: Permission, project: str) -> bool:
        if self.admin:
            return True
        if permission in GLOBAL_PERMISSIONS:
            return False
        return permission in self.by_project.get(project, ())

    def readable_projects(self) -> frozenset[str] | None:
        """The projects it may read; None for every project (an admin)."""
        if self.admin:
            return None
        return frozenset(p for p, perms in self.by_project.items() if P.READ in perms)

    def may_grant(self, role: str, project: str) -> bool:
        """No escalation: granting needs roles.grant in the project and every permission
        the role carries (an admin may grant anything)."""
        if self.admin:
            return True
        if role == ADMIN:
            return False
        held = self.by_project.get(project, frozenset())
        return P.GRANT in held and ROLES[role] <= held


@dataclass(frozen=True)
class Caller:
    """Who makes a call, as every use case receives it. With auth off (`authenticated`
    false) the caller may do everything and `principal` is the `x-modelreg-actor` text."""

    principal: str
    grants: Grants = field(default_factory=Grants)
    authenticated: bool = False
    token_name: str = ""  # the token it authenticated with; "" for a certificate
    token_hash: str = ""  # to re-check a stream's token; never a secret
    token_expires: datetime | None = None
    via: str = "none"  # "token", "certificate" or "none"
    on_behalf_of: str = ""  # x-modelreg-actor text, with auth on

    @property
    def name(self) -> str:
        """What history rows and events record as the actor."""
        return self.principal

    def allows(self, permission: Permission, project: str) -> bool:
        return not self.authenticated or self.grants.allows(permission, project)

    def require(self, permission: Permission, project: str) -> None:
        """Raises PermissionDenied naming the principal, the permission and the project."""
        if self.allows(permission, project):
            return
        if permission in GLOBAL_PERMISSIONS:
            raise PermissionDenied(
                f"principal {self.principal!r} lacks permission {permission.value!r}, which only the global "
                "admin role has; ask an admin"
            )
        raise PermissionDenied(
            f"principal {self.principal!r} lacks permission {permission.value!r} in project {project!r}; ask an "
            f"admin or a project-admin of {project!r} to grant it a role that has it"
        )

    def may_read(self, project: str) -> bool:
        return not self.authenticated or self.grants.allows(P.READ, project)


def anonymous(actor: str = ANONYMOUS) -> Caller:
    """The caller with auth off: allowed everything, named by what it says it is."""
    return Caller(principal=actor or ANONYMOUS)


# The system itself (the canary judge, start-up bootstrap): allowed everything.
SYSTEM = Caller(principal="modelreg", authenticated=False)
