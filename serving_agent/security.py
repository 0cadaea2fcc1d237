"""The agent's two secured connections: to the registry (a bearer token, TLS, mTLS, as any
SDK client) and its own inference port (TLS, optionally requiring client certificates).

    creds = registry_credentials(token_file="/run/secrets/agent.token", ca_cert="/etc/modelreg/ca.pem")
    tls = InferenceTLS.from_flags(cert="agent.pem", key="agent-key.pem", client_ca="apps-ca.pem")
    server.add_secure_port(listen, tls.server_credentials())

The registry side is `modelreg.credentials` and nothing else: the agent builds its channel
with `credentials.aio_channel`, so every call (the watch, downloads, status reports)
carries the token, and a token FILE IS RE-READ WHEN IT CHANGES, so a rotated token needs no
restart. Both are checked here once at start-up (every file read), so a missing or
unreadable file is an `AgentConfigError` naming its flag before anything listens. No
secret is logged or described: `describe()` says where the token comes from, never what it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from modelreg.credentials import ConfigError, Credentials
from serving_agent.errors import AgentConfigError


def registry_credentials(
    *,
    token_file: str | os.PathLike | None = None,
    ca_cert: str | os.PathLike | None = None,
    client_cert: str | os.PathLike | None = None,
    client_key: str | os.PathLike | None = None,
) -> Credentials:
    """The flags win over MODELREG_TOKEN_FILE, MODELREG_TOKEN, MODELREG_CA_CERT,
    MODELREG_CLIENT_CERT and MODELREG_CLIENT_KEY. Every file is read once now; the token
    file is read again whenever it changes."""
    try:
        creds = Credentials.from_env(
            token_file=token_file, ca_cert=ca_cert, client_cert=client_cert, client_key=client_key
        )
        creds.current_token()  # the token file exists and is readable
        creds.channel_credentials()  # so are the CA and the client certificate and key
    except ConfigError as e:
        raise AgentConfigError(e.message) from None
    return creds


def describe_registry(creds: Credentials) -> list[tuple[str, str]]:
    """The start banner's lines about the registry connection, without any secret."""
    if creds.token_file is not None:
        token = f"from {creds.token_file} (re-read when it changes)"
    elif creds.token:
        token = "from MODELREG_TOKEN"
    else:
        token = "none"
    if creds.client_cert is not None:
        tls = f"mTLS (CA {creds.ca_cert or 'system roots'}, client certificate {creds.client_cert})"
    elif creds.ca_cert is not None:
        tls = f"TLS (CA {creds.ca_cert})"
    else:
        tls = "plaintext"
    return [("registry token", token), ("registry transport", tls)]


@dataclass(frozen=True)
class InferenceTLS:
    """TLS on the inference port: a certificate and its key; with `client_ca`, every
    client must present a certificate signed by that CA (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def from_flags(
        cls,
        cert: str | os.PathLike | None,
        key: str | os.PathLike | None,
        client_ca: str | os.PathLike | None = None,
    ) -> InferenceTLS | None:
        """None for a plaintext port. A certificate without its key (or the reverse), or a
        client CA without a certificate, is an `AgentConfigError` naming the flag to add."""
        if cert and not key:
            raise AgentConfigError("--tls-cert needs its private key: add --tls-key FILE (or MODELREG_TLS_KEY)")
        if key and not cert:
            raise AgentConfigError("--tls-key needs its certificate: add --tls-cert FILE (or MODELREG_TLS_CERT)")
        if client_ca and not cert:
            raise AgentConfigError(
                "--tls-client-ca verifies clients of a TLS port: add --tls-cert FILE and --tls-key FILE"
            )
        if not cert or not key:
            return None
        return cls(Path(cert), Path(key), Path(client_ca) if client_ca else None)

    @property
    def mode(self) -> str:
        return "mTLS" if self.client_ca is not None else "TLS"

    def describe(self) -> str:
        if self.client_ca is None:
            return f"TLS (certificate {self.cert})"
        return f"mTLS (certificate {self.cert}; client certificates required, verified against {self.client_ca})"

    def server_credentials(self) -> grpc.ServerCredentials:
        """Reads the files now; one that cannot be read is an `AgentConfigError`."""
        chain = _read(self.cert, "--tls-cert", "MODELREG_TLS_CERT", "certificate")
        key = _read(self.key, "--tls-key", "MODELREG_TLS_KEY", "private key")
        ca = _read(self.client_ca, "--tls-client-ca", "MODELREG_TLS_CLIENT_CA", "client CA") if self.client_ca else None
        try:
            return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=ca is not None)
        except (ValueError, TypeError) as e:  # grpc checks only that they are bytes
            raise AgentConfigError(f"--tls-cert/--tls-key cannot be used: {e}") from None


def _read(path: Path, flag: str, variable: str, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AgentConfigError(
            f"cannot read the {what} {str(path)!r} ({e.strerror or e}); fix {flag} (or {variable})"
        ) from None
    if b"-----BEGIN" not in data:
        raise AgentConfigError(f"the {what} {str(path)!r} is not PEM; fix {flag} (or {variable})")
    return data
