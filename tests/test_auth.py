"""Identity and access against a real registry with auth on: bootstrap, credentials, roles,
the audit trail, and watch streams that respect permissions."""

from __future__ import annotations

import stat
import subprocess
import threading
import time

import grpc
import pytest
from auth_helpers import bearer
from conftest import BIN
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx_helpers import onnx_bytes

from modelreg import Client
from modelreg.credentials import Credentials, sync_channel
from modelreg.v1 import auth_service_pb2 as au
from modelreg.v1 import auth_service_pb2_grpc as au_grpc
from modelreg.v1 import event_service_pb2 as es
from modelreg.v1 import event_service_pb2_grpc as es_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc


def client_for(address: str, token: str, actor: str = "") -> Client:
    return Client(address, actor=actor or None, channel=sync_channel(address, Credentials(token=token)))


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


# ---------------------------------------------------------------- bootstrap


def test_the_bootstrap_token_is_created_once_with_mode_0600_and_never_logged(spawn_registry, tmp_path):
    proc, address = spawn_registry(MODELREG_AUTH="on")
    token_file = tmp_path / "data" / "admin.token"
    deadline = time.monotonic() + 20
    while not token_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    secret = token_file.read_text().strip()
    assert secret.startswith("mr_") and len(secret) == 46  # mr_ + 256 bits in URL-safe base64
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    with grpc.insecure_channel(address) as channel:
        me = au_grpc.AuthServiceStub(channel).WhoAmI(au.WhoAmIRequest(), metadata=bearer(secret), timeout=10)
    assert me.principal.principal_id == "admin"
    assert [(b.role, b.project) for b in me.bindings] == [("admin", "")]
    assert me.token.token_id == "admin-bootstrap" and me.authenticated_by == "token"

    proc.terminate()
    proc.wait(20)
    port = int(address.rsplit(":", 1)[1])
    proc2, _ = spawn_registry(port=port, MODELREG_AUTH="on")
    time.sleep(1.0)
    proc2.terminate()
    proc2.wait(20)
    assert token_file.read_text().strip() == secret  # not replaced: bootstrap happened once
    log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("server-*.log"))
    assert log.count("created principal 'admin'") == 2  # banner and log line, first start only
    assert str(token_file) in log
    assert secret not in log


# ---------------------------------------------------------------- credentials


def test_calls_without_a_valid_credential_are_unauthenticated_and_health_stays_open(secure_registry):
    sr = secure_registry
    stub = rs_grpc.RegistryServiceStub(sr.channel)
    listing = rs.ListModelsRequest()

    code, message = code_of(lambda: stub.ListModels(listing, timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "MODELREG_TOKEN" in message

    code, message = code_of(lambda: stub.ListModels(listing, metadata=(("authorization", "Basic abc"),), timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in message

    forged = "mr_" + "A" * 43
    code, message = code_of(lambda: stub.ListModels(listing, metadata=bearer(forged), timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "unknown token" in message and forged not in message

    token = sr.principal("viewer-1", ("viewer", "default"))
    assert stub.ListModels(listing, metadata=bearer(token), timeout=10) is not None
    sr.revoke("viewer-1-token")
    code, message = code_of(lambda: stub.ListModels(listing, metadata=bearer(token), timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in message and token not in message

    short = sr.token("viewer-1", "short-lived", ttl_seconds=1)
    assert stub.ListModels(listing, metadata=bearer(short), timeout=10) is not None
    time.sleep(1.2)
    code, message = code_of(lambda: stub.ListModels(listing, metadata=bearer(short), timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in message

    health = health_pb2_grpc.HealthStub(sr.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    listed = subprocess.run(
        [str(BIN / "grpcurl"), "-plaintext", sr.address, "list"], capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0 and "modelreg.v1.AuthService" in listed.stdout


def test_a_principal_without_the_permission_is_denied_with_a_message_naming_it(secure_registry, tmp_path):
    sr = secure_registry
    sr.project("vision")
    trainer = sr.principal("ci", ("trainer", "vision"), service_account=True)
    viewer = sr.principal("ann", ("viewer", "vision"))
    artifact = tmp_path / "m.onnx"
    artifact.write_bytes(onnx_bytes())
    with client_for(sr.address, trainer) as ci:
        ci.create_model("det", project="vision")
        ci.register("det", artifact, create_model=False)
    with client_for(sr.address, viewer) as ann:
        assert ann.get_version("det", 1).version == 1
        from modelreg import errors

        with pytest.raises(errors.PermissionDenied) as denied:
            ann.promote("det", 1, "production")
        assert "'ann'" in denied.value.message
        assert "'versions.promote'" in denied.value.message
        assert "'vision'" in denied.value.message
        with pytest.raises(errors.PermissionDenied):
            ann.create_model("other", project="vision")


def test_no_escalation_a_project_admin_grants_only_in_its_project_and_never_admin(secure_registry):
    sr = secure_registry
    sr.project("a")
    sr.project("b")
    pa = sr.principal("pa", ("project-admin", "a"))
    sr.principal("dev")
    auth = sr.auth

    def grant(role: str, project: str):
        req = au.GrantRoleRequest(binding=au.RoleBinding(principal="dev", role=role, project=project))
        return auth.GrantRole(req, metadata=bearer(pa), timeout=10)

    assert grant("releaser", "a").binding.role == "releaser"
    assert code_of(lambda: grant("viewer", "b"))[0] == grpc.StatusCode.PERMISSION_DENIED
    code, message = code_of(lambda: grant("admin", ""))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "admin" in message
    code, _ = code_of(
        lambda: auth.CreateToken(au.CreateTokenRequest(token_id="x", principal="dev"), metadata=bearer(pa))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # A releaser cannot grant at all, not even the role it holds.
    rel = sr.principal("rel", ("releaser", "a"))
    req = au.GrantRoleRequest(binding=au.RoleBinding(principal="dev", role="viewer", project="a"))
    assert code_of(lambda: auth.GrantRole(req, metadata=bearer(rel)))[0] == grpc.StatusCode.PERMISSION_DENIED


# ---------------------------------------------------------------- the audit trail


def test_history_names_the_authenticated_principal_even_with_a_forged_actor(secure_registry, tmp_path):
    sr = secure_registry
    trainer = sr.principal("ci", ("trainer", "default"))
    releaser = sr.principal("rita", ("releaser", "default"))
    artifact = tmp_path / "m.onnx"
    artifact.write_bytes(onnx_bytes())
    with client_for(sr.address, trainer) as ci:
        ci.register("fraud", artifact)
        artifact.write_bytes(onnx_bytes())
        ci.register("fraud", artifact)
    with client_for(sr.address, releaser, actor="mallory") as rita:
        rita.promote("fraud", 1, "production", reason="launch")
        rita.set_canary("fraud", 2, 10)
        transitions = list(rita.history("fraud"))
        entries = list(rita.deployment_history("fraud"))
    assert [(t.actor, t.token_name, t.on_behalf_of) for t in transitions] == [("rita", "rita-token", "mallory")]
    assert [(e.actor, e.token_name, e.on_behalf_of) for e in entries] == [
        ("rita", "rita-token", "mallory"),
        ("rita", "rita-token", "mallory"),
    ]


# ---------------------------------------------------------------- streams


def _collect(stub, request, token: str, out: list, stop: threading.Event, errors: list):
    call = stub.WatchEvents(request, metadata=bearer(token), timeout=60)
    try:
        for msg in call:
            out.append(msg)
            if stop.is_set():
                call.cancel()
                return
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            errors.append(e)


def test_a_watcher_sees_its_projects_events_complete_and_in_order_and_never_anothers(secure_registry, tmp_path):
    sr = secure_registry
    sr.project("a")
    sr.project("b")
    viewer = sr.principal("va", ("viewer", "a"))
    writer = sr.principal("w", ("project-admin", "a"), ("project-admin", "b"))
    stub = es_grpc.EventServiceStub(sr.channel)
    got: list = []
    stop, errors = threading.Event(), []
    request = es.WatchEventsRequest(bookmark_interval_seconds=1)
    t = threading.Thread(target=_collect, args=(stub, request, viewer, got, stop, errors), daemon=True)
    t.start()
    while not got:
        time.sleep(0.05)
    assert got[0].WhichOneof("payload") == "snapshot"

    artifact = tmp_path / "m.onnx"
    with client_for(sr.address, writer) as w:
        for i in range(6):  # interleaved: a, b, a, b ...
            project = "ab"[i % 2]
            w.create_model(f"{project}-m{i}", project=project)
            artifact.write_bytes(onnx_bytes())
            w.register(f"{project}-m{i}", artifact, create_model=False)
            w.promote(f"{project}-m{i}", 1, "production")
    listed = es_grpc.EventServiceStub(sr.channel).ListEvents(
        es.ListEventsRequest(), metadata=bearer(writer), timeout=10
    )
    expected = [e.sequence for e in listed.events if e.project == "a"]
    assert len(expected) == 3 * 4  # created, ready, stage, deployment per model of a
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen = [m.event.sequence for m in got if m.WhichOneof("payload") == "event"]
        if seen == expected and any(
            m.WhichOneof("payload") == "bookmark" and m.bookmark.sequence >= listed.events[-1].sequence for m in got
        ):
            break
        time.sleep(0.1)
    stop.set()
    events = [m.event for m in got if m.WhichOneof("payload") == "event"]
    assert [e.sequence for e in events] == expected
    assert {e.project for e in events} == {"a"}
    assert all(not e.model.startswith("models/b-") for e in events)
    assert any(m.WhichOneof("payload") == "bookmark" and m.bookmark.sequence >= listed.events[-1].sequence for m in got)
    # ListEvents filters the same way; access events are an admin's only.
    page = stub.ListEvents(es.ListEventsRequest(page_size=1000), metadata=bearer(viewer), timeout=10)
    assert [e.sequence for e in page.events] == expected
    everything = stub.ListEvents(es.ListEventsRequest(page_size=1000), metadata=bearer(sr.admin_token), timeout=10)
    assert any(e.type == es.EVENT_TYPE_ACCESS_CHANGED for e in everything.events)
    assert not errors


def test_a_token_revoked_while_its_stream_is_open_ends_the_stream(secure_registry):
    sr = secure_registry
    token = sr.principal("agent-1", ("agent", "default"), service_account=True)
    stub = es_grpc.EventServiceStub(sr.channel)
    call = stub.WatchEvents(es.WatchEventsRequest(bookmark_interval_seconds=30), metadata=bearer(token), timeout=60)
    first = next(call)
    assert first.WhichOneof("payload") == "snapshot"
    revoked_at = time.monotonic()
    sr.revoke("agent-1-token")
    with pytest.raises(grpc.RpcError) as ended:
        for _ in call:
            pass
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in ended.value.details()
    assert time.monotonic() - revoked_at < 3.0


def test_auth_auto_is_off_on_loopback_and_on_beyond_it():
    from registry_server.config import Settings

    assert not Settings(address="127.0.0.1:50051").auth_enabled
    assert not Settings(address="localhost:1").auth_enabled
    assert not Settings(address="[::1]:1").auth_enabled
    assert not Settings(address="unix:/tmp/x.sock").auth_enabled
    assert Settings(address="0.0.0.0:50051").auth_enabled
    assert Settings(address="10.1.2.3:50051").auth_enabled
    assert Settings(address="127.0.0.1:1", auth="on").auth_enabled
    explicit = Settings(address="0.0.0.0:1", auth="off")
    assert not explicit.auth_enabled and explicit.auth_off_beyond_loopback


def test_a_model_without_project_lands_in_default(client):
    m = client.create_model("plain")
    assert m.project == "default"
    assert client.create_model("vis", project="vision").project == "vision"  # auth off: created on first use
    assert [m.name for m in client.list_models(project="vision")] == ["models/vis"]


def test_a_tokens_last_use_is_recorded_and_its_secret_is_never_listed(secure_registry):
    sr = secure_registry
    token = sr.principal("lu", ("viewer", "default"))
    listed = sr.admin("ListTokens", au.ListTokensRequest(principal="lu"))
    assert [t.token_id for t in listed.tokens] == ["lu-token"] and not listed.tokens[0].HasField("last_use_time")
    rs_grpc.RegistryServiceStub(sr.channel).ListModels(rs.ListModelsRequest(), metadata=bearer(token), timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # written in the background, at most once a minute per token
        listed = sr.admin("ListTokens", au.ListTokensRequest(principal="lu"))
        if listed.tokens[0].HasField("last_use_time"):
            break
        time.sleep(0.1)
    assert listed.tokens[0].HasField("last_use_time")
    assert token not in str(listed) and token[3:] not in str(listed)
