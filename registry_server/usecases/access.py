"""Authentication and authorization, once, for every front end.

`Access.authenticate` turns a call's credential (a bearer token, or the names in a
verified client certificate) into a `Caller`; `Access.require` checks a permission in the
project of a model (or a named project) and raises PermissionDenied. Every use case calls
`require` before it reads or writes; the gRPC layer only authenticates.

Caches: tokens by hash, every binding and principal name, and each model's project. Any
ACCESS_CHANGED event (from this process's commit or any replica's, through the event hub)
drops the token and binding caches and re-checks every open stream's token, ending the
streams whose token was revoked or expired (within a second). A model's project is
immutable; MODEL_CREATED/MODEL_DELETED drop its entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from registry_server.domain.access import (
    GLOBAL_PERMISSIONS,
    Binding,
    Caller,
    Grants,
    Permission,
    anonymous,
    project_of,
)
from registry_server.errors import ModelNotFound, Unauthenticated
from registry_server.outage import Outage
from registry_server.storage.access import AccessStore, Token
from registry_server.storage.events import EventRow

log = logging.getLogger(__name__)

TOKEN_PREFIX = "mr_"
MAX_CACHED_TOKENS = 10_000
LAST_USE_EVERY_S = 60.0
CHECK_EVERY_S = 1.0


def new_secret() -> str:
    """A fresh token secret: `mr_` and 256 random bits, URL-safe base64 (43 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What is stored and looked up: the secret's sha256 (hex)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(eq=False)
class OpenStream:
    """A streaming call in progress, so a revoked or expired token can end it."""

    caller: Caller
    task: asyncio.Task | None
    inside: bool = False  # the task is awaiting the servicer (not grpc's write)
    ended: str | None = None  # why it must end, once it must


@dataclass
class _Loaded:
    grants: dict[str, Grants] = field(default_factory=dict)
    principals: frozenset[str] = frozenset()


class Access:
    def __init__(self, store: AccessStore, enabled: bool):
        self.store = store
        self.pool: asyncpg.Pool = store.pool
        self.enabled = enabled
        self._generation = 0
        self._tokens: dict[str, Token] = {}
        self._unknown: set[str] = set()  # digests no token has: bounded apart, so junk cannot evict good ones
        self._loaded: _Loaded | None = None
        self._load_lock = asyncio.Lock()
        self._projects: dict[str, str] = {}
        self._streams: set[OpenStream] = set()
        self._used: dict[str, datetime] = {}
        self._used_at: dict[str, float] = {}
        self._wake = asyncio.Event()

    # ---------------------------------------------------------------- authentication

    async def authenticate(self, authorization: str | None, cert_names: Sequence[str], actor: str) -> Caller:
        """The caller a call's credential names. `authorization` is the metadata value,
        `cert_names` the verified client certificate's CN and SANs, `actor` the
        `x-modelreg-actor` text (the identity with auth off, on-behalf-of text with it on).
        Raises Unauthenticated, whose message never contains the secret."""
        if not self.enabled:
            return anonymous(actor)
        if authorization:
            scheme, _, secret = authorization.strip().partition(" ")
            secret = secret.strip()
            if scheme.lower() != "bearer" or not secret:
                raise Unauthenticated(
                    "malformed authorization metadata: send 'authorization: Bearer <token>' (grpcurl: "
                    '-H "authorization: Bearer $TOKEN")'
                )
            return await self._by_token(secret, actor)
        if cert_names:
            return await self._by_certificate(cert_names, actor)
        raise Unauthenticated(
            "no credential: this registry requires a token; send 'authorization: Bearer <token>' metadata (set "
            'MODELREG_TOKEN or --token-file; grpcurl: -H "authorization: Bearer $TOKEN") or a client certificate'
        )

    async def _by_token(self, secret: str, actor: str) -> Caller:
        d = digest(secret)
        token = await self._token(d)
        if token is None or not hmac.compare_digest(token.hash, d):
            raise Unauthenticated(
                "unknown token: it is not a token of this registry (copied incompletely, or from another "
                "registry?); ask an admin for one ('modelreg tokens create')"
            )
        invalid = token_problem(token)
        if invalid:
            raise Unauthenticated(invalid)
        loaded = await self._load()
        self._note_use(token.name)
        return Caller(
            principal=token.principal,
            grants=loaded.grants.get(token.principal, Grants()),
            authenticated=True,
            token_name=token.name,
            token_hash=d,
            token_expires=token.expires_at,
            via="token",
            on_behalf_of=actor if actor != "anonymous" else "",
        )

    async def _by_certificate(self, names: Sequence[str], actor: str) -> Caller:
        loaded = await self._load()
        for name in names:
            if name in loaded.principals:
                return Caller(
                    principal=name,
                    grants=loaded.grants.get(name, Grants()),
                    authenticated=True,
                    via="certificate",
                    on_behalf_of=actor if actor != "anonymous" else "",
                )
        shown = ", ".join(repr(n) for n in names[:4])
        raise Unauthenticated(
            f"the client certificate names no principal of this registry ({shown}); an admin creates one with "
            "'modelreg principals create NAME' where NAME is the certificate's CN or a SAN"
        )

    async def _token(self, d: str) -> Token | None:
        token = self._tokens.get(d)
        if token is not None or d in self._unknown:
            return token
        generation = self._generation
        token = await self.store.token_by_hash(d)
        if generation == self._generation:
            cache: dict[str, Token] | set[str] = self._tokens if token is not None else self._unknown
            if len(cache) >= MAX_CACHED_TOKENS:
                cache.clear()
            if token is not None:
                self._tokens[d] = token
            else:
                self._unknown.add(d)
        return token

    async def _load(self) -> _Loaded:
        loaded = self._loaded
        if loaded is not None:
            return loaded
        async with self._load_lock:
            while self._loaded is None:
                generation = self._generation
                bindings = await self.store.all_bindings()
                names = {r["name"] for r in await self.pool.fetch("SELECT name FROM principals")}
                by: dict[str, list[Binding]] = {}
                for b in bindings:
                    by.setdefault(b.principal, []).append(b)
                fresh = _Loaded({p: Grants.of(bs) for p, bs in by.items()}, frozenset(names))
                if generation == self._generation:
                    self._loaded = fresh
                else:
                    continue
            return self._loaded

    def _note_use(self, name: str) -> None:
        now = time.monotonic()
        if now - self._used_at.get(name, -LAST_USE_EVERY_S) >= LAST_USE_EVERY_S:
            self._used_at[name] = now
            self._used[name] = datetime.now(UTC)

    async def grants_of(self, principal: str) -> Grants:
        return (await self._load()).grants.get(principal, Grants())

    async def principal_exists(self, principal: str) -> bool:
        return principal in (await self._load()).principals

    def current_grants(self, caller: Caller) -> Grants:
        """The caller's grants as cached now (a long stream sees role changes)."""
        loaded = self._loaded
        if loaded is None:
            return caller.grants
        return loaded.grants.get(caller.principal, Grants())

    # ---------------------------------------------------------------- authorization

    async def project_of(self, model: str) -> str:
        """The model's project; ModelNotFound when it does not exist."""
        project = self._projects.get(model)
        if project is None:
            project = await self.pool.fetchval("SELECT project FROM models WHERE name = $1", model)
            if project is None:
                raise ModelNotFound(model)
            self._projects[model] = project
        return project

    async def require(self, caller: Caller, permission: Permission, *, model: str = "", project: str = "") -> str:
        """Checks `permission` in the model's project (or `project`, empty for `default`);
        returns the project ("" for a model's with auth off: nothing is looked up then). A
        global permission ignores both."""
        if not caller.authenticated:
            return "" if model else project_of(project)
        if permission in GLOBAL_PERMISSIONS:
            caller.require(permission, "")
            return ""
        where = await self.project_of(model) if model else project_of(project)
        caller.require(permission, where)
        return where

    def readable(self, caller: Caller, permission: Permission = Permission.READ) -> frozenset[str] | None:
        """The projects where the caller has `permission` (None: every project)."""
        if not caller.authenticated:
            return None
        grants = self.current_grants(caller)
        if grants.admin:
            return None
        return frozenset(p for p, perms in grants.by_project.items() if permission in perms)

    def may_see(self, caller: Caller, project: str | None, permission: Permission = Permission.WATCH) -> bool:
        """Whether an event (or a state) of `project` may reach the caller; None is an access
        event, for admins only. Synchronous: it runs for every event of every stream."""
        if not caller.authenticated:
            return True
        grants = self.current_grants(caller)
        if project is None:
            return grants.admin
        return grants.allows(permission, project)

    # ---------------------------------------------------------------- invalidation

    def invalidate(self) -> None:
        """Drops cached tokens and bindings and re-checks every open stream."""
        self._generation += 1
        self._tokens = {}
        self._unknown = set()
        self._loaded = None
        self._wake.set()

    def forget_models(self, models: Iterable[str]) -> None:
        for m in models:
            self._projects.pop(m, None)

    def on_events(self, rows: Sequence[EventRow] | None) -> None:
        """The event hub's callback (every replica's commits); None (events may have been
        missed) forgets everything cached."""
        if rows is None:
            self._projects.clear()
            self.invalidate()
            return
        access = False
        for r in rows:
            if r.type == "ACCESS_CHANGED":
                access = True
            elif r.type in ("MODEL_CREATED", "MODEL_DELETED"):
                self._projects.pop(r.model, None)
        if access:
            self.invalidate()

    # ---------------------------------------------------------------- streams

    def open_stream(self, caller: Caller) -> OpenStream:
        s = OpenStream(caller, asyncio.current_task())
        if caller.authenticated and caller.via == "token":
            self._streams.add(s)
        return s

    def close_stream(self, s: OpenStream) -> None:
        self._streams.discard(s)

    def _end(self, s: OpenStream, why: str) -> None:
        if s.ended is None:
            s.ended = why
            log.info("ending a stream of %s: %s", s.caller.principal, why)
            if s.inside and s.task is not None:
                s.task.cancel()

    async def _check_streams(self, recheck: bool) -> None:
        now = datetime.now(UTC)
        for s in list(self._streams):
            if s.ended is not None:
                continue
            expires = s.caller.token_expires
            if expires is not None and expires <= now:
                self._end(s, f"token {s.caller.token_name!r} expired at {expires.isoformat()}; use a new one")
            elif recheck:
                token = await self._token(s.caller.token_hash)
                problem = "the token no longer exists" if token is None else token_problem(token, now)
                if problem:
                    self._end(s, problem)

    async def run(self) -> None:
        """Background: re-checks streams after each invalidation and every second (expiry),
        and records tokens' last use."""
        outage = Outage("access checks and token last-use writer", log)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CHECK_EVERY_S)
            recheck = self._wake.is_set()
            self._wake.clear()
            try:
                await self._check_streams(recheck)
                used, self._used = self._used, {}
                await self.store.touch_tokens(used)
                outage.ok()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                outage.failed(e)  # one line when the database goes, one when it is back
                if recheck:
                    self._wake.set()


def token_problem(token: Token, now: datetime | None = None) -> str:
    """Why a token cannot authenticate now, or ''."""
    if token.revoked_at is not None:
        return f"token {token.name!r} was revoked at {token.revoked_at.isoformat()}; ask an admin for a new one"
    now = now or datetime.now(UTC)
    if token.expires_at is not None and token.expires_at <= now:
        return f"token {token.name!r} expired at {token.expires_at.isoformat()}; ask an admin for a new one"
    return ""
