"""An agent against a registry with auth on: a service account `agent-1` with the `agent`
role in project `default`, its token in a file (or, over mTLS, its client certificate).

The real `modelreg agent` follows a model, serves it and reports its status (ListAgents
shows it); the same token cannot promote (PERMISSION_DENIED naming the principal, the
permission and the project). Then the token is rotated as an operator would: a second
token, the file rewritten, the first token revoked. The agent keeps following (a new
promotion reaches it) without a restart: its open watch ends with UNAUTHENTICATED and the
next one carries the new token.

Over TLS (certificates made with `trustme`), the agent trusts the registry with --ca-cert;
with the registry verifying client certificates, a certificate naming `agent-1` is the
agent's identity and no token is needed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import trustme
from agent_helpers import onnx_scale_model, wait_until

from modelreg import Client, errors
from modelreg.credentials import Credentials, sync_channel
from modelreg.v1 import agent_service_pb2 as ag
from modelreg.v1 import auth_service_pb2 as au
from modelreg.v1 import auth_service_pb2_grpc as au_grpc

pytestmark = pytest.mark.timeout(240)

X = {"x": np.ones((1, 4), np.float32)}
SERVING = ag.SERVED_VERSION_STATE_SERVING


def as_principal(address: str, token: str) -> Client:
    """An SDK client whose every call carries `token`."""
    return Client(address, channel=sync_channel(address, Credentials(token=token)), actor="forged-actor")


def served_version(agent) -> str:
    with agent.client() as c:
        return c.predict("guarded", X).model_version


@pytest.fixture
def secured(make_registry, tmp_path):
    """A registry with auth on, and the admin token it wrote at its first start."""
    reg = make_registry(auth="on")
    admin = (tmp_path / "data" / "admin.token").read_text().strip()
    assert admin
    return reg, admin


def test_an_agent_role_token_follows_serves_reports_cannot_promote_and_rotates_without_restart(
    secured, agents, tmp_path
):
    reg, admin_token = secured
    admin_channel = sync_channel(reg.address, Credentials(token=admin_token))
    auth = au_grpc.AuthServiceStub(admin_channel)
    auth.CreatePrincipal(
        au.CreatePrincipalRequest(principal=au.Principal(principal_id="agent-1", service_account=True)), timeout=10
    )
    auth.GrantRole(
        au.GrantRoleRequest(binding=au.RoleBinding(principal="agent-1", role="agent", project="default")), timeout=10
    )
    first = auth.CreateToken(au.CreateTokenRequest(token_id="agent-1-a", principal="agent-1"), timeout=10).token
    token_file = tmp_path / "agent.token"
    token_file.write_text(first + "\n")
    token_file.chmod(0o600)

    admin = Client(reg.address, channel=admin_channel, actor="tester")
    v1 = admin.register("guarded", onnx_scale_model(1.0), filename="g.onnx")
    admin.promote("guarded", v1.version, "production")

    agent = agents(reg.address, ["guarded"], name="node-7", extra=["--token-file", str(token_file)])
    agent.wait_serving()
    assert served_version(agent) == "models/guarded/versions/1"

    # It reports: ListAgents (as the admin) shows it serving v1.
    def reported() -> bool:
        listed = admin.agents.ListAgents(ag.ListAgentsRequest(model="models/guarded"), timeout=10).agents
        return any(
            a.agent_id == "node-7" and any(v.version == 1 and v.state == SERVING for m in a.models for v in m.versions)
            for a in listed
        )

    wait_until(reported, 30, what="ListAgents showing node-7 serving v1")

    # The agent's token may not promote.
    v2 = admin.register("guarded", onnx_scale_model(2.0), filename="g.onnx")
    with as_principal(reg.address, first) as intruder:
        with pytest.raises(errors.PermissionDenied) as denied:
            intruder.promote("guarded", v2.version, "production")
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    for word in ("agent-1", "default"):
        assert word in denied.value.message, denied.value.message
    assert served_version(agent) == "models/guarded/versions/1"

    # Rotation: a second token, the file rewritten, then the first token revoked.
    second = auth.CreateToken(au.CreateTokenRequest(token_id="agent-1-b", principal="agent-1"), timeout=10).token
    rewritten = tmp_path / "agent.token.new"
    rewritten.write_text(second + "\n")
    rewritten.chmod(0o600)
    os.replace(rewritten, token_file)
    time.sleep(1.5)  # the agent looks at the file at most once a second
    auth.RevokeToken(au.RevokeTokenRequest(name="tokens/agent-1-a"), timeout=10)
    with as_principal(reg.address, first) as revoked:
        with pytest.raises(errors.Unauthenticated):
            revoked.get_model("guarded")

    # The watch opened with the first token ends; the agent watches again with the second.
    wait_until(lambda: "UNAUTHENTICATED" in agent.log(), 30, what="the revoked token's watch to end")
    admin.promote("guarded", v2.version, "production")
    wait_until(lambda: served_version(agent) == "models/guarded/versions/2", 60, what="v2 served after the rotation")

    def reported_v2() -> bool:
        listed = admin.agents.ListAgents(ag.ListAgentsRequest(model="models/guarded"), timeout=10).agents
        return any(
            a.agent_id == "node-7" and any(v.version == 2 and v.state == SERVING for m in a.models for v in m.versions)
            for a in listed
        )

    wait_until(reported_v2, 30, what="a status report with the second token")
    assert agent.proc is not None and agent.proc.poll() is None  # never restarted
    log = agent.log()
    assert first not in log and second not in log  # no secret in the agent's output
    admin.close()


# ------------------------------------------------------------------ TLS to the registry


def setup_agent_principal(address: str, admin: Credentials) -> str:
    """agent-1 (a service account) with the agent role in default; returns a token of it."""
    with sync_channel(address, admin) as channel:
        auth = au_grpc.AuthServiceStub(channel)
        auth.CreatePrincipal(
            au.CreatePrincipalRequest(principal=au.Principal(principal_id="agent-1", service_account=True)), timeout=10
        )
        auth.GrantRole(
            au.GrantRoleRequest(binding=au.RoleBinding(principal="agent-1", role="agent", project="default")),
            timeout=10,
        )
        return auth.CreateToken(au.CreateTokenRequest(token_id="agent-1-a", principal="agent-1"), timeout=10).token


def tls_files(tmp_path) -> dict[str, str]:
    """The registry's certificate (for 127.0.0.1) from one CA; client certificates for
    `agent-1` and for the test's admin session from another."""
    d = tmp_path / "pki"
    d.mkdir()
    server_ca, client_ca = trustme.CA(), trustme.CA()
    out: dict[str, str] = {}

    def write(name: str, blob) -> None:
        out[name] = str(d / f"{name}.pem")
        blob.write_to_path(out[name])

    server = server_ca.issue_cert("127.0.0.1", "localhost")
    write("ca", server_ca.cert_pem)
    write("cert", server.cert_chain_pems[0])
    write("key", server.private_key_pem)
    write("client_ca", client_ca.cert_pem)
    for who in ("agent-1", "operator"):
        issued = client_ca.issue_cert(who, common_name=who)
        write(f"{who}_cert", issued.cert_chain_pems[0])
        write(f"{who}_key", issued.private_key_pem)
    return out


def follows_and_reports(address: str, admin: Credentials, agent, agent_id: str) -> None:
    """The agent serves v1, ListAgents shows it healthy, and it follows a promotion to v2."""
    with Client(address, channel=sync_channel(address, admin), actor="tester") as c:
        v1 = c.register("guarded", onnx_scale_model(1.0), filename="g.onnx")
        c.promote("guarded", v1.version, "production")
        agent.wait_serving()
        assert served_version(agent) == "models/guarded/versions/1"

        def reported() -> bool:
            listed = c.agents.ListAgents(ag.ListAgentsRequest(model="models/guarded"), timeout=10).agents
            return any(a.agent_id == agent_id and a.healthy for a in listed)

        wait_until(reported, 30, what=f"ListAgents showing {agent_id}")
        v2 = c.register("guarded", onnx_scale_model(2.0), filename="g.onnx")
        c.promote("guarded", v2.version, "production")
        wait_until(lambda: served_version(agent) == "models/guarded/versions/2", 60, what="v2 served")


def test_an_agent_trusts_a_tls_registry_with_ca_cert_and_authenticates_with_its_token_file(
    make_registry, agents, tmp_path
):
    pki = tls_files(tmp_path)
    reg = make_registry(auth="on", tls_cert=pki["cert"], tls_key=pki["key"])
    admin = Credentials(token=(tmp_path / "data" / "admin.token").read_text().strip(), ca_cert=Path(pki["ca"]))
    token_file = tmp_path / "agent.token"
    token_file.write_text(setup_agent_principal(reg.address, admin) + "\n")

    agent = agents(
        reg.address, ["guarded"], name="tls-node", extra=["--token-file", str(token_file), "--ca-cert", pki["ca"]]
    )
    follows_and_reports(reg.address, admin, agent, "tls-node")
    assert f"registry transport  TLS (CA {pki['ca']})" in agent.log()


def test_over_mtls_the_agents_client_certificate_is_its_identity(make_registry, agents, tmp_path):
    pki = tls_files(tmp_path)
    reg = make_registry(auth="on", tls_cert=pki["cert"], tls_key=pki["key"], tls_client_ca=pki["client_ca"])
    admin = Credentials(
        token=(tmp_path / "data" / "admin.token").read_text().strip(),
        ca_cert=Path(pki["ca"]),
        client_cert=Path(pki["operator_cert"]),
        client_key=Path(pki["operator_key"]),
    )
    setup_agent_principal(reg.address, admin)

    env = {"MODELREG_CLIENT_CERT": pki["agent-1_cert"], "MODELREG_CLIENT_KEY": pki["agent-1_key"]}
    agent = agents(reg.address, ["guarded"], name="mtls-node", extra=["--ca-cert", pki["ca"]], env=env)
    follows_and_reports(reg.address, admin, agent, "mtls-node")
    log = agent.log()
    assert "registry token      none" in log
    assert f"registry transport  mTLS (CA {pki['ca']}, client certificate {pki['agent-1_cert']})" in log

    # The certificate is agent-1 and nothing more: it may not promote.
    agent_creds = Credentials(
        ca_cert=Path(pki["ca"]), client_cert=Path(pki["agent-1_cert"]), client_key=Path(pki["agent-1_key"])
    )
    with Client(reg.address, channel=sync_channel(reg.address, agent_creds)) as as_agent:
        with pytest.raises(errors.PermissionDenied, match="agent-1"):
            as_agent.promote("guarded", 1, "production")
