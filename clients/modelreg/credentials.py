"""How a client proves who it is and checks whom it talks to: a bearer token, TLS, mTLS.

    creds = Credentials.from_env()            # MODELREG_TOKEN / MODELREG_TOKEN_FILE,
                                              # MODELREG_CA_CERT, MODELREG_CLIENT_CERT/_KEY
    channel = sync_channel("registry:50051", creds)

A CA file (or a client certificate) implies TLS; without one the channel is plaintext. The
token travels as `authorization: Bearer <token>` metadata, added by a client interceptor
to every call, so it also works on a plaintext loopback channel. A token file is re-read
when its modification time changes (checked at most once a second), so a rotated token
needs no restart. Nothing here logs or formats a secret: `repr(Credentials)` masks it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from modelreg import errors

TOKEN_RECHECK_S = 1.0

# HTTP/2 keepalive on channels to the registry: while a call is open (a watch, a download)
# the client pings after MODELREG_KEEPALIVE_SECONDS (default 10) without traffic and drops
# the connection when no answer comes within as long again, so a half-open connection (a
# NAT or load balancer that lost its state, a partition that sends no reset) fails the call
# within ~20 s and the channel reconnects, instead of a watch waiting forever (found by the
# chaos suite, benchmarks/chaos). gRPC 1.6x+ times a keepalive ping out by
# `grpc.http2.ping_timeout_ms` (60 s by default), so both are set. The registry accepts
# pings down to 1 s apart.
KEEPALIVE_DEFAULT_S = 10.0


def keepalive_options() -> tuple[tuple[str, Any], ...]:
    raw = os.environ.get("MODELREG_KEEPALIVE_SECONDS", "").strip()
    try:
        seconds = float(raw) if raw else KEEPALIVE_DEFAULT_S
        if not 1 <= seconds <= 3600:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"MODELREG_KEEPALIVE_SECONDS={raw!r} is not a number of seconds from 1 to 3600; set it like 10"
        ) from None
    ms = int(seconds * 1000)
    return (
        ("grpc.keepalive_time_ms", ms),
        ("grpc.keepalive_timeout_ms", ms),
        ("grpc.http2.ping_timeout_ms", ms),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    )


def _options(options: Sequence[tuple[str, Any]], keepalive: bool) -> list[tuple[str, Any]]:
    """The caller's options, over the keepalive defaults (a caller's key wins)."""
    given = {k for k, _ in options}
    defaults = [kv for kv in keepalive_options() if kv[0] not in given] if keepalive else []
    return [*defaults, *options]


class ConfigError(errors.ModelregError):
    """A credential setting that cannot be used (a missing or unreadable file)."""

    def __init__(self, message: str):
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message)


def _read(path: Path, what: str, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} {str(path)!r} ({e.strerror or e}); fix {variable}") from None


class _TokenFile:
    """A token file, re-read when its mtime changes (stat at most once a second)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._checked = 0.0
        self._token = ""

    def token(self) -> str:
        now = time.monotonic()
        if now - self._checked < TOKEN_RECHECK_S and self._mtime is not None:
            return self._token
        with self._lock:
            self._checked = now
            try:
                mtime = self.path.stat().st_mtime
            except OSError as e:
                if self._mtime is not None:  # keep the last good token through a rotation's gap
                    return self._token
                raise ConfigError(
                    f"cannot read the token file {str(self.path)!r} ({e.strerror or e}); fix --token-file "
                    "or MODELREG_TOKEN_FILE"
                ) from None
            if mtime != self._mtime:
                self._token = _read(self.path, "token file", "--token-file or MODELREG_TOKEN_FILE").decode().strip()
                self._mtime = mtime
            return self._token


@dataclass(frozen=True)
class Credentials:
    """What a channel authenticates with. Every field is optional; empty means plaintext
    and no token (a registry on loopback with auth off)."""

    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    _file: _TokenFile | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.token_file is not None and self._file is None:
            object.__setattr__(self, "_file", _TokenFile(Path(self.token_file)))
        if (self.client_cert is None) != (self.client_key is None):
            raise ConfigError(
                "a client certificate needs its key: set both MODELREG_CLIENT_CERT and MODELREG_CLIENT_KEY"
            )

    @classmethod
    def from_env(
        cls,
        *,
        token: str | None = None,
        token_file: str | os.PathLike | None = None,
        ca_cert: str | os.PathLike | None = None,
        client_cert: str | os.PathLike | None = None,
        client_key: str | os.PathLike | None = None,
    ) -> Credentials:
        """Arguments win over MODELREG_TOKEN, MODELREG_TOKEN_FILE, MODELREG_CA_CERT,
        MODELREG_CLIENT_CERT and MODELREG_CLIENT_KEY. A token file wins over a token."""
        env = os.environ

        def path(value: str | os.PathLike | None, variable: str) -> Path | None:
            chosen = value if value not in (None, "") else env.get(variable) or None
            return Path(chosen) if chosen is not None else None

        tfile = path(token_file, "MODELREG_TOKEN_FILE")
        return cls(
            token=None if tfile else (token or env.get("MODELREG_TOKEN") or None),
            token_file=tfile,
            ca_cert=path(ca_cert, "MODELREG_CA_CERT"),
            client_cert=path(client_cert, "MODELREG_CLIENT_CERT"),
            client_key=path(client_key, "MODELREG_CLIENT_KEY"),
        )

    @property
    def tls(self) -> bool:
        return self.ca_cert is not None or self.client_cert is not None

    def current_token(self) -> str | None:
        """The token to send now (a token file's current content), or None."""
        if self._file is not None:
            return self._file.token() or None
        return self.token or None

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (with the client certificate for mTLS), or None for plaintext."""
        if not self.tls:
            return None
        root = _read(self.ca_cert, "CA certificate", "--ca-cert or MODELREG_CA_CERT") if self.ca_cert else None
        key = chain = None
        if self.client_cert is not None and self.client_key is not None:
            chain = _read(self.client_cert, "client certificate", "MODELREG_CLIENT_CERT")
            key = _read(self.client_key, "client key", "MODELREG_CLIENT_KEY")
        return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _SyncDetails(_Details, grpc.ClientCallDetails):
    pass


def _with_token(metadata: Any, token: str | None) -> list[tuple[str, str]]:
    out = [(k, v) for k, v in (metadata or ()) if k != "authorization"]
    if token:
        out.append(("authorization", f"Bearer {token}"))
    return out


class _SyncTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: Callable[[], str | None]):
        self._token = token

    def _details(self, d: Any) -> _SyncDetails:
        return _SyncDetails(
            d.method,
            d.timeout,
            _with_token(d.metadata, self._token()),
            d.credentials,
            d.wait_for_ready,
            d.compression,
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def _aio_details(d: grpc.aio.ClientCallDetails, token: str | None) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(
        d.method, d.timeout, grpc.aio.Metadata(*_with_token(d.metadata, token)), d.credentials, d.wait_for_ready
    )


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: Callable[[], str | None]):
        self._token = token

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_aio_details(client_call_details, self._token()), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: Callable[[], str | None]):
        self._token = token

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_aio_details(client_call_details, self._token()), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, token: Callable[[], str | None]):
        self._token = token

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(_aio_details(client_call_details, self._token()), request_iterator)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, token: Callable[[], str | None]):
        self._token = token

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(_aio_details(client_call_details, self._token()), request_iterator)


#: The service config of a channel to several registry replicas: spread calls over every
#: address (round_robin), and skip a replica whose grpc.health.v1 says NOT_SERVING (its
#: database or store is unreachable) until it says SERVING again.
REPLICAS_SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)


def several_addresses(address: str) -> bool:
    """Whether `address` is a gRPC target listing several addresses (`ipv4:a:1,b:2`,
    `ipv6:[::1]:1,[::1]:2`): replicas of one registry."""
    scheme, _, rest = address.partition(":")
    return scheme in ("ipv4", "ipv6") and "," in rest


def channel_options(address: str, options: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """`options`, plus the replicas' service config when `address` lists several addresses
    (unless `options` sets a service config of its own)."""
    out = list(options)
    if several_addresses(address) and not any(k == "grpc.service_config" for k, _ in out):
        out.append(("grpc.service_config", REPLICAS_SERVICE_CONFIG))
    return out


def sync_channel(
    address: str,
    credentials: Credentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    *,
    keepalive: bool = True,
) -> grpc.Channel:
    """A blocking channel: TLS when the credentials say so, the token on every call; several
    addresses are load-balanced (`channel_options`); `keepalive_options()` unless `keepalive`
    is False."""
    options = channel_options(address, options)
    creds = credentials or Credentials()
    tls = creds.channel_credentials()
    opts = _options(options, keepalive)
    channel = (
        grpc.secure_channel(address, tls, options=opts)
        if tls is not None
        else grpc.insecure_channel(address, options=opts)
    )
    if creds.token is None and creds.token_file is None:
        return channel
    return grpc.intercept_channel(channel, _SyncTokenInterceptor(creds.current_token))


def aio_channel(
    address: str,
    credentials: Credentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    *,
    keepalive: bool = True,
) -> grpc.aio.Channel:
    """An asyncio channel, likewise."""
    options = _options(channel_options(address, options), keepalive)
    creds = credentials or Credentials()
    tls = creds.channel_credentials()
    interceptors: list[Any] = []
    if creds.token is not None or creds.token_file is not None:
        t = creds.current_token
        interceptors = [_AioUnaryUnary(t), _AioUnaryStream(t), _AioStreamUnary(t), _AioStreamStream(t)]
    if tls is not None:
        return grpc.aio.secure_channel(address, tls, options=list(options), interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)
