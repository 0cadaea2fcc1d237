"""Named aliases (MLflow 3's `@champion`), as pure rules: what an alias may be called, who
may move it, and the plan of one change (its event and history row). No I/O.

Invariants:
- An alias name is 1 to 63 characters of letters, digits, '-' and '_', starting with a
  letter; it is case-insensitive and kept in lowercase. It is never a stage name
  (`none`, `staging`, `production`, `archived`), `latest`, nor `v` followed by digits, so
  `models/m/versions/{x}` always means one thing: a number, a stage alias or a user alias.
- An alias points at exactly one existing version of its model; a version an alias points
  at cannot be deleted.
- Moving, deleting, protecting or unprotecting a PROTECTED alias needs the releaser's
  permission (`versions.promote`); an unprotected one needs `aliases.set`. `production`
  is always protected: it is the production stage, moved by promotion.
- Every change is one ALIAS_CHANGED event and one history row in the same transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from registry_server.domain.access import Permission
from registry_server.domain.events import EventDraft
from registry_server.errors import FailedPrecondition, InvalidArgument, NotFound

ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
ALIAS_RULE = "1 to 63 letters, digits, '-' and '_', starting with a letter (for example 'champion' or 'eu-prod')"
# Names `models/m/versions/{x}` already gives a meaning to.
RESERVED = ("none", "staging", "production", "archived", "latest")
_VERSION_LIKE = re.compile(r"^v\d+$")
ALIAS_CHANGED = "ALIAS_CHANGED"


def normalize_alias(value: str, field: str = "alias") -> str:
    """The alias in its stored (lowercase) form; InvalidArgument saying what to change."""
    alias = (value or "").strip().lower()
    if not alias:
        raise InvalidArgument(f"'{field}' is required: give an alias name like 'champion'")
    if alias == "production":
        raise InvalidArgument(
            "'production' is the production stage, not an alias: move it with "
            "'modelreg promote MODEL VERSION production' (PromoteModelVersion); pick another alias name"
        )
    if alias in RESERVED:
        raise InvalidArgument(
            f"{value!r} is reserved ({'a stage' if alias != 'latest' else 'the newest version'}); "
            "pick another alias name, like 'champion'"
        )
    if _VERSION_LIKE.match(alias):
        raise InvalidArgument(f"alias {value!r} looks like a version number; pick a name like 'champion'")
    if not ALIAS_RE.match(alias):
        raise InvalidArgument(f"invalid alias {value!r}: use {ALIAS_RULE}")
    return alias


def is_alias(value: str) -> bool:
    """Whether `value` (already lowercase) is a well-formed user alias name."""
    return bool(ALIAS_RE.match(value)) and value not in RESERVED and not _VERSION_LIKE.match(value)


@dataclass(frozen=True)
class Alias:
    """One alias as stored."""

    model: str
    alias: str
    version: int
    protected: bool = False
    updated_by: str = ""
    update_time: datetime | None = None


@dataclass(frozen=True)
class AliasChange:
    """One row of an alias's history: from_version 0 when created, to_version 0 when deleted."""

    model: str
    alias: str
    from_version: int
    to_version: int
    actor: str
    reason: str = ""
    create_time: datetime | None = None
    sequence: int = 0


def required_permission(current: Alias | None, protected_after: bool) -> Permission:
    """What a change needs: PROMOTE when the alias is protected before or after it (moving
    or deleting a protected alias, protecting or unprotecting one), else SET_ALIAS."""
    if (current is not None and current.protected) or protected_after:
        return Permission.PROMOTE
    return Permission.SET_ALIAS


@dataclass(frozen=True)
class AliasPlan:
    """What one set or delete does: the row after it (None when deleted), the event and the
    history row. `changed` is False for a set that changes nothing (no event, no row)."""

    before: Alias | None
    after: Alias | None
    reason: str
    artifact: dict[str, Any] | None = None  # the target's ArtifactRef.as_dict(), for agents

    @property
    def changed(self) -> bool:
        if self.before is None or self.after is None:
            return self.before is not self.after
        return (self.before.version, self.before.protected) != (self.after.version, self.after.protected)

    @property
    def moves(self) -> bool:
        """Whether the alias gets a new target (created or moved): what a gate guards."""
        return self.after is not None and (self.before is None or self.before.version != self.after.version)

    @property
    def from_version(self) -> int:
        return self.before.version if self.before else 0

    @property
    def to_version(self) -> int:
        return self.after.version if self.after else 0

    def event(self) -> EventDraft:
        a = self.after or self.before
        assert a is not None
        details: dict[str, Any] = {
            "alias": a.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "protected": bool(self.after and self.after.protected),
        }
        if self.artifact is not None and self.after is not None:
            details["artifact"] = self.artifact
        return EventDraft(ALIAS_CHANGED, a.model, self.to_version, reason=self.reason, details=details)


def plan_set(
    model: str,
    alias: str,
    version: int,
    current: Alias | None,
    protected: bool | None,
    reason: str,
    actor: str,
    artifact: dict[str, Any] | None,
) -> AliasPlan:
    """Creating or moving `alias` to `version`; `protected` None keeps the current setting
    (False for a new alias)."""
    keep = current.protected if current is not None else False
    after = Alias(model, alias, version, keep if protected is None else protected, actor)
    return AliasPlan(current, after, reason, artifact)


def plan_delete(model: str, alias: str, current: Alias | None, reason: str) -> AliasPlan:
    if current is None:
        raise alias_not_found(model, alias)
    return AliasPlan(current, None, reason)


def alias_not_found(model: str, alias: str) -> NotFound:
    """NOT_FOUND for a named alias the model does not have (the model exists)."""
    return NotFound(
        f"model 'models/{model}' has no alias {alias!r}; list its aliases with 'modelreg alias list {model}', "
        f"or set it with 'modelreg alias set {model} {alias} VERSION'"
    )


def check_deletable(model: str, version: int, aliases: list[str]) -> None:
    """A version an alias points at cannot be deleted (FailedPrecondition naming them)."""
    if not aliases:
        return
    names = ", ".join(repr(a) for a in aliases)
    first = aliases[0]
    raise FailedPrecondition(
        f"models/{model}/versions/{version} is what alias{'es' if len(aliases) > 1 else ''} {names} "
        f"point{'' if len(aliases) > 1 else 's'} at; move "
        f"{'them' if len(aliases) > 1 else 'it'} first ('modelreg alias set {model} {first} OTHER_VERSION') "
        f"or delete {'them' if len(aliases) > 1 else 'it'} ('modelreg alias delete {model} {first}')"
    )
