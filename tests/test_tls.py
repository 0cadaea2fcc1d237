"""Real TLS and mTLS, with certificates made in the test by `trustme`: the SDK over TLS, a
plaintext client or one trusting another CA refused cleanly, client certificates mapped to
principals, the real grpcurl binary with -cacert / -cert / -key, and a server started with
unusable TLS flags exiting with status 2 and one line naming the flag.

Two registries (auth on) serve the module: one with TLS (`tls_registry`) and one that also
requires client certificates (`mtls_registry`, `--tls-client-ca`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import trustme
from auth_helpers import admin_token_of, bearer, registry_on_a_new_database
from conftest import BIN, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx_helpers import onnx_bytes

from modelreg import Client
from modelreg.credentials import Credentials, sync_channel
from modelreg.v1 import auth_service_pb2 as au
from modelreg.v1 import auth_service_pb2_grpc as au_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res

pytestmark = pytest.mark.timeout(90)
GRPCURL = BIN / "grpcurl"
REFUSED_WITHIN_S = 5.0  # a refused connection fails this fast, far inside the call's deadline


# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # signed the server's certificate
    server: Leaf  # for 127.0.0.1 and localhost
    other_ca: Path  # an unrelated CA
    client_ca: Path  # signs client certificates (the server's --tls-client-ca)
    alice: Leaf  # CN alice (a principal), SAN alice.clients.test
    bob: Leaf  # CN build-box-7 (no principal), SAN bob (a principal)
    stranger: Leaf  # CN stranger, SAN stranger.clients.test: no principal
    ops: Leaf  # CN ops-box: no principal; used with the admin's token
    rogue: Leaf  # CN alice, but signed by other_ca


def _write(leaf: trustme.LeafCert, d: Path, name: str) -> Leaf:
    out = Leaf(d / f"{name}.pem", d / f"{name}.key")
    leaf.cert_chain_pems[0].write_to_path(str(out.cert))
    leaf.private_key_pem.write_to_path(str(out.key))
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA(organization_name="modelreg test CA")
    other = trustme.CA(organization_name="someone else's CA")
    clients = trustme.CA(organization_name="modelreg client CA")
    for authority, name in ((ca, "ca"), (other, "other-ca"), (clients, "client-ca")):
        authority.cert_pem.write_to_path(str(d / f"{name}.pem"))
    return Pki(
        ca=d / "ca.pem",
        server=_write(ca.issue_cert("127.0.0.1", "localhost"), d, "server"),
        other_ca=d / "other-ca.pem",
        client_ca=d / "client-ca.pem",
        alice=_write(clients.issue_cert("alice.clients.test", common_name="alice"), d, "alice"),
        bob=_write(clients.issue_cert("bob", common_name="build-box-7"), d, "bob"),
        stranger=_write(clients.issue_cert("stranger.clients.test", common_name="stranger"), d, "stranger"),
        ops=_write(clients.issue_cert("ops-box.clients.test", common_name="ops-box"), d, "ops"),
        rogue=_write(other.issue_cert("alice.clients.test", common_name="alice"), d, "rogue"),
    )


# ---------------------------------------------------------------- registries


@dataclass
class Served:
    address: str
    admin_token: str


@pytest.fixture(scope="module")
def tls_registry(postgres, pki, tmp_path_factory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("tls")
    with registry_on_a_new_database(
        postgres, root, auth="on", tls_cert=str(pki.server.cert), tls_key=str(pki.server.key)
    ) as reg:
        yield Served(reg.address, admin_token_of(root / "data"))


@pytest.fixture(scope="module")
def mtls_registry(postgres, pki, tmp_path_factory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("mtls")
    with registry_on_a_new_database(
        postgres,
        root,
        auth="on",
        tls_cert=str(pki.server.cert),
        tls_key=str(pki.server.key),
        tls_client_ca=str(pki.client_ca),
    ) as reg:
        served = Served(reg.address, admin_token_of(root / "data"))
        # The admin's own calls also need a client certificate here: ops-box names no
        # principal, so the token is what identifies the admin.
        with _channel(
            served.address, Credentials(ca_cert=pki.ca, client_cert=pki.ops.cert, client_key=pki.ops.key)
        ) as ch:
            auth = au_grpc.AuthServiceStub(ch)
            admin = bearer(served.admin_token)
            for name in ("alice", "bob"):
                auth.CreatePrincipal(
                    au.CreatePrincipalRequest(principal=au.Principal(principal_id=name)), metadata=admin, timeout=10
                )
            binding = au.RoleBinding(principal="alice", role="viewer", project="default")
            auth.GrantRole(au.GrantRoleRequest(binding=binding), metadata=admin, timeout=10)
            rs_grpc.RegistryServiceStub(ch).CreateModel(
                rs.CreateModelRequest(model=res.Model(name="models/seen-by-alice")), metadata=admin, timeout=10
            )
        yield served


def _channel(address: str, credentials: Credentials) -> grpc.Channel:
    return sync_channel(address, credentials)


def _refused(call) -> grpc.RpcError:
    """Runs a call that must fail to connect: UNAVAILABLE, quickly (no hang until the
    deadline)."""
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        call()
    elapsed = time.monotonic() - started
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, f"{info.value.code()}: {info.value.details()}"
    assert elapsed < REFUSED_WITHIN_S, f"took {elapsed:.1f}s to fail"
    return info.value


# ---------------------------------------------------------------- TLS


def test_the_sdk_registers_and_downloads_over_tls(tls_registry, pki, tmp_path):
    creds = Credentials(ca_cert=pki.ca, token=tls_registry.admin_token)
    data = onnx_bytes(64)  # weights that travel encrypted
    with Client(tls_registry.address, channel=_channel(tls_registry.address, creds)) as client:
        client.create_model("over-tls")
        registered = client.register("over-tls", data, filename="m.onnx", create_model=False)
        assert registered.artifact.sha256 == hashlib.sha256(data).hexdigest()
        client.promote("over-tls", registered.version, "production")
        path = client.download("over-tls", "production", dest=tmp_path)
        assert path.read_bytes() == data
        assert [m.name for m in client.list_models()] == ["models/over-tls"]
    with _channel(tls_registry.address, creds) as channel:
        me = au_grpc.AuthServiceStub(channel).WhoAmI(au.WhoAmIRequest(), timeout=10)
    assert me.principal.principal_id == "admin" and me.authenticated_by == "token" and me.auth_enabled


def test_a_plaintext_client_to_the_tls_port_fails_fast_with_unavailable(tls_registry):
    with grpc.insecure_channel(tls_registry.address) as channel:
        stub = rs_grpc.RegistryServiceStub(channel)
        _refused(lambda: stub.ListModels(rs.ListModelsRequest(), metadata=bearer(tls_registry.admin_token), timeout=30))
        health = health_pb2_grpc.HealthStub(channel)
        _refused(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=30))


@pytest.mark.parametrize("trust", ["another CA", "the system roots"])
def test_a_client_that_does_not_trust_the_servers_ca_is_refused(tls_registry, pki, trust):
    if trust == "another CA":
        credentials = grpc.ssl_channel_credentials(root_certificates=pki.other_ca.read_bytes())
    else:
        credentials = grpc.ssl_channel_credentials()
    with grpc.secure_channel(tls_registry.address, credentials) as channel:
        stub = au_grpc.AuthServiceStub(channel)
        error = _refused(lambda: stub.WhoAmI(au.WhoAmIRequest(), metadata=bearer(tls_registry.admin_token), timeout=30))
    assert "handshake" in error.details().lower() or "certificate" in error.details().lower(), error.details()


# ---------------------------------------------------------------- mTLS


def _whoami(address: str, credentials: Credentials) -> au.WhoAmIResponse:
    with _channel(address, credentials) as channel:
        return au_grpc.AuthServiceStub(channel).WhoAmI(au.WhoAmIRequest(), timeout=10)


def test_a_client_certificate_authenticates_as_the_principal_its_cn_or_san_names(mtls_registry, pki):
    alice = Credentials(ca_cert=pki.ca, client_cert=pki.alice.cert, client_key=pki.alice.key)
    me = _whoami(mtls_registry.address, alice)
    assert me.principal.principal_id == "alice" and me.authenticated_by == "certificate"
    assert not me.HasField("token")
    assert [(b.role, b.project) for b in me.bindings] == [("viewer", "default")]
    with _channel(mtls_registry.address, alice) as channel:
        stub = rs_grpc.RegistryServiceStub(channel)
        listed = stub.ListModels(rs.ListModelsRequest(), timeout=10)
        assert [m.name for m in listed.models] == ["models/seen-by-alice"]
        with pytest.raises(grpc.RpcError) as denied:
            stub.CreateModel(rs.CreateModelRequest(model=res.Model(name="models/by-alice")), timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'alice'" in denied.value.details() and "'models.create'" in denied.value.details()

    bob = Credentials(ca_cert=pki.ca, client_cert=pki.bob.cert, client_key=pki.bob.key)
    me = _whoami(mtls_registry.address, bob)  # CN build-box-7 names nobody; the SAN names bob
    assert me.principal.principal_id == "bob" and me.authenticated_by == "certificate"


def test_a_bearer_token_wins_over_the_client_certificate(mtls_registry, pki):
    alice_with_admin_token = Credentials(
        ca_cert=pki.ca, client_cert=pki.alice.cert, client_key=pki.alice.key, token=mtls_registry.admin_token
    )
    me = _whoami(mtls_registry.address, alice_with_admin_token)
    assert me.principal.principal_id == "admin" and me.authenticated_by == "token"


def test_a_client_certificate_naming_no_principal_is_unauthenticated(mtls_registry, pki):
    stranger = Credentials(ca_cert=pki.ca, client_cert=pki.stranger.cert, client_key=pki.stranger.key)
    with pytest.raises(grpc.RpcError) as info:
        _whoami(mtls_registry.address, stranger)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    message = info.value.details()
    assert "names no principal" in message and "'stranger'" in message, message
    assert "modelreg principals create" in message


def test_without_a_client_certificate_the_handshake_is_refused_even_with_a_token(mtls_registry, pki):
    token_only = Credentials(ca_cert=pki.ca, token=mtls_registry.admin_token)
    _refused(lambda: _whoami(mtls_registry.address, token_only))


def test_a_client_certificate_from_another_ca_is_refused(mtls_registry, pki):
    rogue = Credentials(ca_cert=pki.ca, client_cert=pki.rogue.cert, client_key=pki.rogue.key)
    _refused(lambda: _whoami(mtls_registry.address, rogue))


# ---------------------------------------------------------------- grpcurl


def grpcurl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(GRPCURL), *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"grpcurl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def test_grpcurl_calls_over_tls_with_a_bearer_token(tls_registry, pki):
    address, ca = tls_registry.address, str(pki.ca)
    auth_header = f"authorization: Bearer {tls_registry.admin_token}"
    me = json.loads(grpcurl("-cacert", ca, "-H", auth_header, address, "modelreg.v1.AuthService/WhoAmI").stdout)
    assert me["principal"]["principal_id"] == "admin" and me["authenticated_by"] == "token"

    with Client(address, channel=_channel(address, Credentials(ca_cert=pki.ca, token=tls_registry.admin_token))) as c:
        c.create_model("from-grpcurl-test")
    listed = json.loads(
        grpcurl(
            "-cacert",
            ca,
            "-H",
            auth_header,
            "-d",
            '{"page_size": 1000}',
            address,
            "modelreg.v1.RegistryService/ListModels",
        ).stdout
    )
    assert "models/from-grpcurl-test" in [m["name"] for m in listed["models"]]

    # Reflection works without a token; a call does not.
    assert "modelreg.v1.AuthService" in grpcurl("-cacert", ca, address, "list").stdout.split()
    refused = grpcurl("-cacert", ca, address, "modelreg.v1.AuthService/WhoAmI", check=False)
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr, refused.stderr
    # And a grpcurl that does not trust the CA does not connect at all.
    untrusted = grpcurl("-cacert", str(pki.other_ca), address, "list", check=False)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr.lower(), untrusted.stderr


def test_grpcurl_authenticates_with_a_client_certificate(mtls_registry, pki):
    address = mtls_registry.address
    cert = ("-cacert", str(pki.ca), "-cert", str(pki.alice.cert), "-key", str(pki.alice.key))
    me = json.loads(grpcurl(*cert, address, "modelreg.v1.AuthService/WhoAmI").stdout)
    assert me["principal"]["principal_id"] == "alice" and me["authenticated_by"] == "certificate"
    listed = json.loads(grpcurl(*cert, address, "modelreg.v1.RegistryService/ListModels").stdout)
    assert [m["name"] for m in listed["models"]] == ["models/seen-by-alice"]
    without = grpcurl("-cacert", str(pki.ca), address, "list", check=False)
    assert without.returncode != 0


# ---------------------------------------------------------------- bad TLS flags


# The TLS files are checked before any I/O, so these servers never reach their database:
# one that did would fail with status 1, "cannot connect to the database".
NO_DATABASE = "postgresql://modelreg@127.0.0.1:1/none"


def _server(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_TLS")}
    env.update(
        MODELREG_ADDRESS=f"127.0.0.1:{free_port()}",
        MODELREG_DATABASE_URL=NO_DATABASE,
        MODELREG_DATA_DIR=str(tmp_path / "data"),
        MODELREG_ARTIFACTS=str(tmp_path / "artifacts"),
        MODELREG_AUTH="on",
    )
    return subprocess.run([str(BIN / "modelreg"), "server", *args], capture_output=True, text=True, env=env, timeout=60)


BAD_FLAGS = {
    "a certificate without its key": (["--tls-cert", "{server.cert}"], "--tls-key"),
    "a key without its certificate": (["--tls-key", "{server.key}"], "--tls-cert"),
    "a missing certificate file": (["--tls-cert", "{missing}", "--tls-key", "{server.key}"], "--tls-cert"),
    "a key that is a directory": (["--tls-cert", "{server.cert}", "--tls-key", "{directory}"], "--tls-key"),
    "a missing client CA file": (
        ["--tls-cert", "{server.cert}", "--tls-key", "{server.key}", "--tls-client-ca", "{missing}"],
        "--tls-client-ca",
    ),
    "a client CA without TLS": (["--tls-client-ca", "{client_ca}"], "--tls-client-ca"),
    "a certificate that is not PEM": (["--tls-cert", "{garbage}", "--tls-key", "{server.key}"], "--tls-cert"),
    "a key where the certificate belongs": (["--tls-cert", "{server.key}", "--tls-key", "{server.key}"], "--tls-cert"),
    "a key that is not PEM": (["--tls-cert", "{server.cert}", "--tls-key", "{garbage}"], "--tls-key"),
    "a client CA that is not PEM": (
        ["--tls-cert", "{server.cert}", "--tls-key", "{server.key}", "--tls-client-ca", "{garbage}"],
        "--tls-client-ca",
    ),
    "a key that is not the certificate's": (["--tls-cert", "{server.cert}", "--tls-key", "{alice.key}"], "--tls-key"),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_the_server_exits_2_with_one_line_naming_the_bad_tls_flag(case, pki, tmp_path):
    args, flag = BAD_FLAGS[case]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    (tmp_path / "a-directory").mkdir()
    values = {
        "server.cert": pki.server.cert,
        "server.key": pki.server.key,
        "alice.key": pki.alice.key,
        "client_ca": pki.client_ca,
        "missing": tmp_path / "no-such-file.pem",
        "directory": tmp_path / "a-directory",
        "garbage": garbage,
    }
    argv = [str(values[a[1:-1]]) if a.startswith("{") else a for a in args]
    proc = _server(argv, tmp_path)
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and lines[0].startswith("modelreg server: ")
    assert flag in lines[0], lines[0]
