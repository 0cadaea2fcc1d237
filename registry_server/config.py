"""Settings: one frozen dataclass built from the environment and flags, printed at start-up.

`Settings.from_env` raises `ConfigError` for a value it cannot use, naming the variable and
what to set instead; it never echoes a secret (no secret is parsed here).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from modelreg_runtime.metrics_http import MetricsAddressError, parse_listen
from registry_server.errors import ConfigError
from registry_server.storage.db import describe_url

DEFAULT_ADDRESS = "127.0.0.1:50051"
# Where `modelreg server` serves the web console and the JSON API unless told otherwise.
DEFAULT_HTTP_ADDRESS = "127.0.0.1:8080"


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; set it to true or false")


def _float(name: str, default: float, *, minimum: float = 0.0, above: bool = False) -> float:
    """The number in `name`, `default` when unset or empty. It must be at least `minimum`
    (greater than it when `above`)."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to a number like {default:g}") from None
    if not math.isfinite(value) or value < minimum or (above and value == minimum):
        bound = f"greater than {minimum:g}" if above else f"at least {minimum:g}"
        raise ConfigError(f"{name}={raw!r} is out of range; set it to a number {bound}, like {default:g}")
    return value


def _int(name: str, default: int, *, minimum: int) -> int:
    """The whole number in `name`, `default` when unset or empty; at least `minimum`."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; set it to a number like {default}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} is out of range; set it to at least {minimum}, like {default}")
    return value


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:(?=\D)")  # unix:/path, ipv4:..., not host:port


def _check_address(address: str) -> None:
    """`host:port` with a port from 0 to 65535; gRPC's other forms (`unix:/path`) pass."""
    if _SCHEME.match(address):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"MODELREG_ADDRESS={address!r} is not host:port; set it (or --listen) to an address like {DEFAULT_ADDRESS}"
        )


def is_loopback(address: str) -> bool:
    """Whether only this machine can reach `address`: 127.x, ::1, localhost, a unix socket
    (gRPC's `ipv4:`/`ipv6:` lists count when every entry is loopback)."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    entries = address.split(":", 1)[1].split(",") if address.startswith(("ipv4:", "ipv6:")) else [address]
    hosts = [e.rsplit(":", 1)[0].strip("[]") for e in entries]
    return all(h == "localhost" or h == "::1" or h.startswith("127.") for h in hosts)


@dataclass(frozen=True)
class Settings:
    # Where the gRPC server listens (MODELREG_ADDRESS).
    address: str = DEFAULT_ADDRESS
    # Postgres URL; None starts the embedded Postgres in data_dir (MODELREG_DATABASE_URL).
    database_url: str | None = None
    # Embedded data: Postgres and, by default, artifacts (MODELREG_DATA_DIR).
    data_dir: Path = Path(".modelreg")
    # Artifact store: a directory, or s3://bucket/prefix (MODELREG_ARTIFACTS).
    # Empty means `<data_dir>/artifacts`.
    artifacts: str = ""
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_secure: bool = True
    s3_region: str = ""
    # asyncpg pool size (MODELREG_DB_POOL_SIZE).
    db_pool_size: int = 20
    # Seconds between bookmarks on idle watch streams (MODELREG_BOOKMARK_INTERVAL).
    bookmark_interval: float = 10.0
    # Events older than this are pruned; older cursors get RESYNC_REQUIRED (MODELREG_EVENT_RETENTION_HOURS).
    event_retention: timedelta = timedelta(days=7)
    # Unfinished uploads older than this are removed by the janitor (MODELREG_UPLOAD_TTL_HOURS).
    upload_ttl: timedelta = timedelta(hours=24)
    # A server's upload lease: its uploads are another replica's to remove once it has not
    # renewed it for this long (MODELREG_UPLOAD_LEASE_SECONDS); renewed every third of it.
    upload_lease: timedelta = timedelta(seconds=30)
    # Seconds between janitor passes over unfinished uploads (MODELREG_JANITOR_INTERVAL).
    janitor_interval: float = 60.0
    # Seconds between probes of Postgres and the artifact store behind grpc.health.v1
    # (MODELREG_HEALTH_INTERVAL).
    health_interval: float = 1.0
    # Seconds streams get to finish on SIGTERM (MODELREG_SHUTDOWN_GRACE).
    shutdown_grace: float = 5.0
    # Seconds between canary-policy judgements from agent reports (MODELREG_CANARY_JUDGE_INTERVAL).
    canary_judge_interval: float = 2.0
    # An agent silent this long is stale: it no longer counts toward a rollout (MODELREG_AGENT_STALE_SECONDS).
    agent_stale_after: timedelta = timedelta(seconds=30)
    # The canary judge sums reports of agents heard from within this window
    # (MODELREG_CANARY_STATS_WINDOW_SECONDS).
    canary_stats_window: timedelta = timedelta(seconds=60)
    # Where /metrics (Prometheus) is served, host:port; empty or `off` disables it and the
    # per-RPC metrics (MODELREG_METRICS_ADDRESS, --metrics-listen).
    metrics_address: str = ""
    # A promotion request not approved within this time expires
    # (MODELREG_PROMOTION_REQUEST_TTL_HOURS).
    promotion_request_ttl: timedelta = timedelta(days=7)
    # Whether calls need a token (MODELREG_AUTH, --auth): `on`, `off`, or `auto` (off when
    # the server listens only on loopback, on otherwise).
    auth: str = "auto"
    # TLS: certificate chain and key files (MODELREG_TLS_CERT, MODELREG_TLS_KEY), and a CA
    # whose client certificates are required and verified (MODELREG_TLS_CLIENT_CA).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Where the web console and the JSON API (/api/v1/) listen, host:port; `off` or empty
    # disables them (MODELREG_HTTP_ADDRESS, --http-listen). `modelreg server` defaults to
    # DEFAULT_HTTP_ADDRESS; a Settings built in code has it off unless it asks (so servers
    # started side by side, like tests, never contend for one port).
    http_address: str = ""
    # Webhooks: whether URLs may point at private, loopback or link-local addresses
    # (MODELREG_WEBHOOK_ALLOW_PRIVATE); the key their secrets are sealed with, a Fernet key
    # (MODELREG_WEBHOOK_KEY; empty: `<data_dir>/webhook.key`, made at the first start);
    # how long a delivery is retried (MODELREG_WEBHOOK_RETRY_HOURS), the first and the
    # longest wait between attempts (MODELREG_WEBHOOK_BACKOFF_SECONDS,
    # MODELREG_WEBHOOK_BACKOFF_MAX_SECONDS), and how long a replica's claim on a webhook
    # lasts unrenewed (MODELREG_WEBHOOK_LEASE_SECONDS: another replica takes over after it).
    webhook_allow_private: bool = False
    webhook_key: str = ""
    webhook_retry_window: timedelta = timedelta(hours=24)
    webhook_backoff: float = 1.0
    webhook_backoff_max: float = 3600.0
    webhook_lease: float = 30.0

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        env = os.environ
        s = cls(
            address=env.get("MODELREG_ADDRESS") or DEFAULT_ADDRESS,
            database_url=env.get("MODELREG_DATABASE_URL") or None,
            data_dir=Path(env.get("MODELREG_DATA_DIR") or ".modelreg"),
            artifacts=env.get("MODELREG_ARTIFACTS", ""),
            s3_endpoint=env.get("MODELREG_S3_ENDPOINT", ""),
            s3_access_key=env.get("MODELREG_S3_ACCESS_KEY", ""),
            s3_secret_key=env.get("MODELREG_S3_SECRET_KEY", ""),
            s3_secure=_bool("MODELREG_S3_SECURE", True),
            s3_region=env.get("MODELREG_S3_REGION", ""),
            db_pool_size=_int("MODELREG_DB_POOL_SIZE", 20, minimum=1),
            bookmark_interval=_float("MODELREG_BOOKMARK_INTERVAL", 10.0, above=True),
            event_retention=timedelta(hours=_float("MODELREG_EVENT_RETENTION_HOURS", 24 * 7, above=True)),
            upload_ttl=timedelta(hours=_float("MODELREG_UPLOAD_TTL_HOURS", 24, above=True)),
            upload_lease=timedelta(seconds=_float("MODELREG_UPLOAD_LEASE_SECONDS", 30, above=True)),
            janitor_interval=_float("MODELREG_JANITOR_INTERVAL", 60.0, above=True),
            health_interval=_float("MODELREG_HEALTH_INTERVAL", 1.0, above=True),
            shutdown_grace=_float("MODELREG_SHUTDOWN_GRACE", 5.0),
            canary_judge_interval=_float("MODELREG_CANARY_JUDGE_INTERVAL", 2.0, above=True),
            agent_stale_after=timedelta(seconds=_float("MODELREG_AGENT_STALE_SECONDS", 30, above=True)),
            canary_stats_window=timedelta(seconds=_float("MODELREG_CANARY_STATS_WINDOW_SECONDS", 60, above=True)),
            metrics_address=env.get("MODELREG_METRICS_ADDRESS", ""),
            promotion_request_ttl=timedelta(hours=_float("MODELREG_PROMOTION_REQUEST_TTL_HOURS", 24 * 7, above=True)),
            auth=(env.get("MODELREG_AUTH") or "auto").strip().lower(),
            tls_cert=env.get("MODELREG_TLS_CERT", ""),
            tls_key=env.get("MODELREG_TLS_KEY", ""),
            tls_client_ca=env.get("MODELREG_TLS_CLIENT_CA", ""),
            http_address=env.get("MODELREG_HTTP_ADDRESS", DEFAULT_HTTP_ADDRESS),
            webhook_allow_private=_bool("MODELREG_WEBHOOK_ALLOW_PRIVATE", False),
            webhook_key=env.get("MODELREG_WEBHOOK_KEY", ""),
            webhook_retry_window=timedelta(hours=_float("MODELREG_WEBHOOK_RETRY_HOURS", 24, above=True)),
            webhook_backoff=_float("MODELREG_WEBHOOK_BACKOFF_SECONDS", 1.0, above=True),
            webhook_backoff_max=_float("MODELREG_WEBHOOK_BACKOFF_MAX_SECONDS", 3600.0, above=True),
            webhook_lease=_float("MODELREG_WEBHOOK_LEASE_SECONDS", 30.0, above=True),
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        s = replace(s, **given) if given else s
        _check_address(s.address)
        if s.auth not in ("auto", "on", "off"):
            raise ConfigError(f"MODELREG_AUTH={s.auth!r} is not on, off or auto; set it (or --auth) to one of those")
        if bool(s.tls_cert) != bool(s.tls_key):
            raise ConfigError(
                "TLS needs both a certificate and its key: set MODELREG_TLS_CERT and MODELREG_TLS_KEY "
                "(--tls-cert and --tls-key) together"
            )
        if s.tls_client_ca and not s.tls_cert:
            raise ConfigError(
                "MODELREG_TLS_CLIENT_CA (--tls-client-ca) verifies client certificates over TLS: set "
                "MODELREG_TLS_CERT and MODELREG_TLS_KEY too"
            )
        try:
            parse_listen(s.metrics_address, "MODELREG_METRICS_ADDRESS (--metrics-listen)")
        except MetricsAddressError as e:
            raise ConfigError(str(e)) from None
        try:
            parse_listen(s.http_address, "MODELREG_HTTP_ADDRESS (--http-listen)", example=DEFAULT_HTTP_ADDRESS)
        except MetricsAddressError as e:
            raise ConfigError(str(e)) from None
        return s

    @property
    def auth_enabled(self) -> bool:
        """Whether calls must authenticate: `auto` is on unless the server listens only on
        loopback."""
        if self.auth == "auto":
            return not self.loopback_only
        return self.auth == "on"

    @property
    def loopback_only(self) -> bool:
        """Whether only this machine can reach the server: gRPC and the console (when on)."""
        http = self.http_listen
        return is_loopback(self.address) and (http is None or is_loopback(f"{http[0]}:{http[1]}"))

    @property
    def auth_off_beyond_loopback(self) -> bool:
        """Auth explicitly off on an address others can reach: allowed, with a warning."""
        return self.auth == "off" and not self.loopback_only

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def metrics_listen(self) -> tuple[str, int] | None:
        """(host, port) of /metrics, None when off."""
        return parse_listen(self.metrics_address)

    @property
    def http_listen(self) -> tuple[str, int] | None:
        """(host, port) of the web console, None when off."""
        return parse_listen(self.http_address, "MODELREG_HTTP_ADDRESS (--http-listen)", example=DEFAULT_HTTP_ADDRESS)

    @property
    def artifacts_location(self) -> str:
        return self.artifacts or str(self.data_dir / "artifacts")

    def describe(self) -> list[tuple[str, str]]:
        """Every setting as (name, value) with secrets masked."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "database_url":
                value = describe_url(value) if value else f"(embedded Postgres in {self.data_dir / 'postgres'})"
            elif f.name in ("s3_secret_key", "webhook_key"):
                value = "****" if value else ""
            elif f.name == "artifacts":
                value = self.artifacts_location
            elif f.name == "auth":
                value = f"{value} ({'on' if self.auth_enabled else 'off'})" if value == "auto" else value
            elif f.name == "metrics_address":
                value = value if self.metrics_listen else "off"
            elif f.name == "http_address":
                value = value if self.http_listen else "off"
            out.append((f.name, str(value)))
        return out
