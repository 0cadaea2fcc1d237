"""Webhooks as pure rules: names, URLs and destinations, which events a webhook gets, the
signature, and the retry policy. No I/O: the resolver, the HTTP client and the database
are the caller's.

Invariants:
- A delivery's outcome is decided by `outcome()` alone: 2xx delivered; 429, 5xx, a
  timeout or a connection error retried with `backoff()` until the retry window ends;
  anything else (3xx, 4xx but 429) failed at once.
- The signature is `v1=` and the hex HMAC-SHA256, keyed by the webhook's secret, of
  `"{delivery}.{timestamp}.{body}"` (body as the exact bytes sent).
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import ipaddress
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from registry_server.errors import InvalidArgument

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MIN_SECRET = 16
MAX_URL = 2048


class State(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Webhook:
    name: str  # the id, without `webhooks/`
    project: str
    url: str
    event_types: tuple[str, ...]  # DB type strings (STAGE_CHANGED)
    models: tuple[str, ...]  # model ids; empty: every model of the project
    created_by: str
    created_at: datetime
    cursor: int
    pending: int = 0
    failed: int = 0

    def matches(self, event_type: str, model: str, project: str | None) -> bool:
        """Whether an event goes to this webhook: its project (never an access event, which
        has none), one of its types, and one of its models when it names any."""
        return project == self.project and event_type in self.event_types and (not self.models or model in self.models)


@dataclass(frozen=True)
class Delivery:
    id: str
    webhook: str
    sequence: int
    event_type: str
    event: dict
    state: State
    attempts: int
    redeliveries: int
    last_status: int
    last_error: str
    created_at: datetime
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime
    delivered_at: datetime | None


def validate_name(value: str) -> str:
    name = value.removeprefix("webhooks/")
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid webhook name {value!r}: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. ci-notify)"
        )
    return name


def validate_secret(secret: str) -> str:
    if len(secret) < MIN_SECRET:
        raise InvalidArgument(
            f"the webhook secret has {len(secret)} characters; use at least {MIN_SECRET} (or leave it out to "
            "have one generated)"
        )
    if len(secret) > 1024 or secret != secret.strip():
        raise InvalidArgument("the webhook secret must be at most 1024 characters without surrounding whitespace")
    return secret


def validate_url(url: str) -> tuple[str, str, int]:
    """Checks the URL's form; returns (scheme, host, port). Only http and https, with a
    host, no user info (a password in a URL is shown wherever the webhook is)."""
    if not url or len(url) > MAX_URL:
        raise InvalidArgument(
            f"the webhook needs a 'url' of at most {MAX_URL} characters, like https://ci.example/hook"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidArgument(f"url {url!r} is not a valid URL ({e}); use one like https://ci.example/hook") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(f"url {url!r} must be http:// or https://, not {parts.scheme or 'scheme-less'}")
    if not parts.hostname:
        raise InvalidArgument(f"url {url!r} has no host; use one like https://ci.example/hook")
    if parts.username or parts.password:
        raise InvalidArgument(
            f"url of host {parts.hostname!r} carries user info, which would show wherever the webhook is listed; "
            "let the receiver check the signature instead"
        )
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def forbidden_address(address: str) -> str:
    """Why a destination address is refused ('' when it is public): loopback, private,
    link-local (cloud metadata), multicast, reserved or unspecified."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for attribute in ("is_loopback", "is_link_local", "is_unspecified", "is_multicast", "is_reserved", "is_private"):
        if getattr(ip, attribute):
            return attribute.removeprefix("is_").replace("_", "-")
    return ""


def refuse_private(host: str, addresses: Iterable[str]) -> None:
    """Raises InvalidArgument when any address `host` resolves to is not public."""
    for address in addresses:
        why = forbidden_address(address)
        if why:
            raise InvalidArgument(
                f"webhook host {host!r} resolves to {address}, a {why} address, which this registry does not "
                "send to; use a public host, or start the server with MODELREG_WEBHOOK_ALLOW_PRIVATE=true"
            )


def check_types(types: Sequence[str]) -> tuple[str, ...]:
    if not types:
        raise InvalidArgument(
            "a webhook needs at least one event type in 'event_types' (CLI: --events stage_changed,deployment_changed)"
        )
    if "ACCESS_CHANGED" in types:
        raise InvalidArgument("access_changed events have no project and are never sent to webhooks; leave it out")
    return tuple(dict.fromkeys(types))


# ---------------------------------------------------------------- signing


def signature(secret: str, delivery: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{delivery}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


# ---------------------------------------------------------------- retries


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAIL = "fail"


def outcome(status: int | None) -> Outcome:
    """What a response status means; None is no response (timeout, connection error)."""
    if status is None or status == 429 or status >= 500:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.DELIVERED
    return Outcome.FAIL


@dataclass(frozen=True)
class RetryPolicy:
    first: float = 1.0  # seconds before the second attempt
    maximum: float = 3600.0  # the longest wait between attempts
    window: timedelta = timedelta(hours=24)  # retries stop this long after the first attempt

    def backoff(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds before the next attempt after `attempts` failed ones: `first` doubled per
        attempt up to `maximum`, with full jitter over its upper half (so retries of many
        webhooks spread out but never come sooner than half the step)."""
        step = min(self.maximum, self.first * 2 ** max(0, attempts - 1))
        return step * (0.5 + 0.5 * (rng or random).random())

    def next_attempt(
        self, attempts: int, retry_after: float | None, first_attempt: datetime, now: datetime, rng=None
    ) -> datetime | None:
        """When to try again, or None when that would be past the window. A `Retry-After`
        replaces the backoff, even when longer than `maximum` (the receiver asked)."""
        wait = retry_after if retry_after is not None else self.backoff(attempts, rng)
        at = now + timedelta(seconds=max(0.0, wait))
        return at if at <= first_attempt + self.window else None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
