"""Resource names: `models/{model}` and `models/{model}/versions/{version}`, where the
version is a number, a stage alias (production, staging, latest) or a named alias
(`champion`, see domain/aliases.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry_server.domain.aliases import ALIAS_RULE, is_alias
from registry_server.errors import InvalidArgument

MODEL_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
MODEL_ID_RULE = (
    "1 to 63 characters of lowercase letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
)
# Version aliases that resolve at read time.
VERSION_ALIASES = ("production", "staging", "latest")
MAX_VERSION = 2**63 - 1  # versions are Postgres bigints


def validate_model_id(model_id: str) -> str:
    if not MODEL_ID_RE.match(model_id or ""):
        raise InvalidArgument(f"invalid model id {model_id!r}: use {MODEL_ID_RULE}, for example 'fraud-detector'")
    return model_id


def parse_model_name(name: str, field: str = "name") -> str:
    """`models/{model}` -> model id. A bare id is accepted too, for convenience."""
    if not name:
        raise InvalidArgument(f"'{field}' is required: give a model name like 'models/fraud-detector'")
    parts = name.split("/")
    if len(parts) == 2 and parts[0] == "models":
        return validate_model_id(parts[1])
    if len(parts) == 1:
        return validate_model_id(parts[0])
    raise InvalidArgument(f"invalid {field} {name!r}: expected 'models/{{model}}', for example 'models/fraud-detector'")


@dataclass(frozen=True)
class VersionRef:
    """A version addressed by number or alias (a stage alias or a named one, lowercase)."""

    model: str
    number: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return f"models/{self.model}/versions/{self.number if self.number is not None else self.alias}"


def parse_version_ref(value: str) -> int | str:
    """A version number (1, 2, ...), a stage alias (production, staging, latest) or a named
    alias (champion), lowercase. Numbers and stage aliases are checked first: the hot path."""
    v = (value or "").strip().lower()
    if v in VERSION_ALIASES:
        return v
    # ASCII digits only (str.isdigit() also takes '²' and '١'), and within the int64 a version
    # number is stored as.
    if v.isascii() and v.isdigit() and 1 <= int(v) <= MAX_VERSION:
        return int(v)
    if v.isascii() and v.isdigit() and int(v) > MAX_VERSION:
        raise InvalidArgument(f"version {value!r} is past the largest version number ({MAX_VERSION})")
    if is_alias(v):
        return v
    raise InvalidArgument(
        f"invalid version {value!r}: use a positive number, one of {', '.join(VERSION_ALIASES)}, "
        f"or an alias name ({ALIAS_RULE})"
    )


def parse_version_name(name: str, field: str = "name") -> VersionRef:
    """`models/{model}/versions/{n|production|staging|latest|alias}` -> VersionRef."""
    if not name:
        raise InvalidArgument(f"'{field}' is required: give a version name like 'models/fraud-detector/versions/3'")
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "models" or parts[2] != "versions":
        raise InvalidArgument(
            f"invalid {field} {name!r}: expected 'models/{{model}}/versions/{{version}}', "
            "for example 'models/fraud-detector/versions/3', 'models/fraud-detector/versions/production' "
            "or 'models/fraud-detector/versions/champion'"
        )
    model = validate_model_id(parts[1])
    ref = parse_version_ref(parts[3])
    if isinstance(ref, int):
        return VersionRef(model, number=ref)
    return VersionRef(model, alias=ref)


def model_name(model: str) -> str:
    return f"models/{model}"


def version_name(model: str, version: int) -> str:
    return f"models/{model}/versions/{version}"
