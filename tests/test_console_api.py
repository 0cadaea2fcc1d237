"""The console's HTTP side without a browser: the listener beside gRPC, the JSON API under
/api/v1/ (the gRPC JSON mapping of the same use cases), its errors and paging, auth with
tokens and the session cookie, CSRF, and the settings."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from console_helpers import console_url, http, seed, weights
from google.protobuf import json_format

from modelreg import Client
from modelreg.v1 import deployment_service_pb2 as ds
from modelreg.v1 import deployment_service_pb2_grpc as ds_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res
from registry_server.config import DEFAULT_HTTP_ADDRESS, Settings
from registry_server.errors import ConfigError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def console(make_registry):
    reg = make_registry(http_address="127.0.0.1:0")
    with Client(reg.address, actor="trainer") as c:
        seed(c)
    return reg


def grpc_json(address: str, method: str, request, stub=rs_grpc.RegistryServiceStub) -> dict:
    with grpc.insecure_channel(address) as ch:
        return json_format.MessageToDict(getattr(stub(ch), method)(request, timeout=10))


def test_json_api_answers_what_grpc_answers(console):
    base = console_url(console)
    cases = [
        ("/api/v1/models", "ListModels", rs.ListModelsRequest(), rs_grpc.RegistryServiceStub),
        ("/api/v1/models/det", "GetModel", rs.GetModelRequest(name="models/det"), rs_grpc.RegistryServiceStub),
        (
            "/api/v1/models/det/versions",
            "ListModelVersions",
            rs.ListModelVersionsRequest(parent="models/det"),
            rs_grpc.RegistryServiceStub,
        ),
        (
            "/api/v1/models/det/versions/2",
            "GetModelVersion",
            rs.GetModelVersionRequest(name="models/det/versions/2"),
            rs_grpc.RegistryServiceStub,
        ),
        (
            "/api/v1/models/det/versions/production",
            "GetModelVersion",
            rs.GetModelVersionRequest(name="models/det/versions/production"),
            rs_grpc.RegistryServiceStub,
        ),
        (
            "/api/v1/models/det/deployment",
            "GetDeployment",
            ds.GetDeploymentRequest(name="models/det/deployment"),
            ds_grpc.DeploymentServiceStub,
        ),
    ]
    for path, method, request, stub in cases:
        reply = http(base, path)
        assert reply.status == 200, (path, reply.text)
        assert reply.headers["content-type"] == "application/json"
        assert reply.json() == grpc_json(console.address, method, request, stub), path
    version = http(base, "/api/v1/models/det/versions/2").json()["modelVersion"]
    assert version["metricHistory"]["map50"]["points"][1] == {"step": "4", "value": 0.62}  # proto JSON names
    assert version["lineage"] == {"datasetId": "coco-mini", "parentVersion": "1"}


def test_versions_page_like_grpc_and_a_bad_token_is_400(console):
    base = console_url(console)
    first = http(base, "/api/v1/models/det/versions?page_size=2").json()
    assert [v["version"] for v in first["modelVersions"]] == ["3", "2"]
    second = http(base, f"/api/v1/models/det/versions?page_size=2&page_token={first['nextPageToken']}").json()
    assert [v["version"] for v in second["modelVersions"]] == ["1"] and "nextPageToken" not in second
    staged = http(base, "/api/v1/models/det/versions?stage=production").json()
    assert [v["version"] for v in staged["modelVersions"]] == ["1"]
    for path in ("/api/v1/models/det/versions?page_token=bogus", "/api/v1/models?page_token=bogus"):
        bad = http(base, path)
        assert bad.status == 400
        assert bad.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert "pass the next_page_token of the same list call" in bad.json()["error"]["message"]
    assert "whole number" in http(base, "/api/v1/models?page_size=ten").json()["error"]["message"]


def test_every_json_endpoint_and_a_page_answer_404_for_an_unknown_model(console):
    base = console_url(console)
    for path in (
        "/api/v1/models/nope",
        "/api/v1/models/nope/versions",
        "/api/v1/models/nope/versions/1",
        "/api/v1/models/nope/versions/latest",
        "/api/v1/models/nope/deployment",
    ):
        reply = http(base, path)
        assert reply.status == 404, path
        assert reply.json()["error"]["status"] == "NOT_FOUND", path
        assert "nope" in reply.json()["error"]["message"], path
    page = http(base, "/models/nope")
    assert page.status == 404 and page.headers["content-type"].startswith("text/html")
    assert "models/nope" in page.text and "does not exist" in page.text
    assert http(base, "/api/v1/models/det/versions/9").status == 404
    signin = http(base, "/signin")  # auth off: no sign-in, the redirect lands on the models
    assert signin.status == 200 and 'id="models"' in signin.text
    assert http(base, "/api/v1/models/Bad%20Name").status == 400


def test_the_version_json_memo_lets_go_of_versions_the_cache_dropped():
    import gc

    from registry_server.console.api import VersionJson

    class Version:  # stands in for a cached ModelVersion
        pass

    memo = VersionJson()._memo
    kept, dropped = Version(), Version()
    assert memo.get(kept, lambda v: b"kept") == b"kept" and memo.get(dropped, lambda v: b"dropped") == b"dropped"
    assert memo.get(kept, lambda v: b"rebuilt") == b"kept"  # built once per object
    del dropped
    gc.collect()
    assert len(memo) == 1


def test_the_event_stream_takes_as_many_models_as_watch_events(console):
    from registry_server.services.events import MAX_WATCHED_MODELS

    query = "&".join(f"model=m{i}" for i in range(MAX_WATCHED_MODELS + 1))
    reply = http(console_url(console), f"/events/stream?{query}")
    assert reply.status == 400 and f"the maximum is {MAX_WATCHED_MODELS}" in reply.json()["error"]["message"]


def test_artifact_download_streams_the_registered_bytes_with_their_digest(console):
    reply = http(console_url(console), "/models/det/versions/2/artifact")
    assert reply.status == 200
    assert reply.body == weights(2)
    assert reply.headers["x-modelreg-sha256"] == hashlib.sha256(weights(2)).hexdigest()
    assert reply.headers["content-length"] == str(len(weights(2)))
    assert 'filename="det_v2_model.onnx"' in reply.headers["content-disposition"]


def test_with_auth_on_the_api_takes_a_bearer_token_and_shows_only_readable_projects(make_registry, tmp_path):
    from auth_helpers import SecureRegistry, admin_token_of

    reg = make_registry(auth="on", http_address="127.0.0.1:0")
    admin = admin_token_of(tmp_path / "data")
    with grpc.insecure_channel(reg.address) as channel:
        sr = SecureRegistry(reg, reg.address, admin, channel)
        sr.project("vision")
        sr.project("nlp")
        vera = sr.principal("vera", ("viewer", "vision"))
        with Client(reg.address, token=admin) as c:
            seed(c, "det", project="vision")
            c.create_model("secret", project="nlp")
    base = console_url(reg)
    anonymous = http(base, "/api/v1/models")
    assert anonymous.status == 401 and "sign in first" in anonymous.json()["error"]["message"]
    assert http(base, "/api/v1/models", token="mr_wrong").status == 401
    names = [m["name"] for m in http(base, "/api/v1/models", token=vera).json()["models"]]
    assert names == ["models/det"]
    denied = http(base, "/api/v1/models/secret", token=vera)
    assert denied.status == 403
    assert "lacks permission 'models.read' in project 'nlp'" in denied.json()["error"]["message"]
    page = http(base, "/models/det")
    assert page.status == 303 or "Sign in" in page.text  # urllib follows the redirect to /signin
    assert "/signin" in page.text or page.headers.get("location", "").startswith("/signin")


def test_revoking_the_token_over_grpc_ends_its_console_session_and_api_access(make_registry, tmp_path):
    from auth_helpers import SecureRegistry, admin_token_of

    reg = make_registry(auth="on", http_address="127.0.0.1:0")
    admin = admin_token_of(tmp_path / "data")
    with grpc.insecure_channel(reg.address) as channel:
        sr = SecureRegistry(reg, reg.address, admin, channel)
        sr.project("vision")
        vera = sr.principal("vera", ("viewer", "vision"))
        base = console_url(reg)
        session = {"Cookie": f"modelreg_session={vera}"}  # what signing in set
        for headers in ({"Authorization": f"Bearer {vera}"}, session):
            assert http(base, "/api/v1/models", headers=headers).status == 200
        sr.revoke("vera-token")
    for headers in ({"Authorization": f"Bearer {vera}"}, session):
        reply = http(base, "/api/v1/models", headers=headers)
        assert reply.status == 401 and reply.json()["error"]["status"] == "UNAUTHENTICATED", reply.text


def test_a_post_without_the_csrf_token_is_refused(console):
    base = console_url(console)
    form = b"version=2&stage=production&reason=ship"
    reply = http(
        base,
        "/models/det/promote",
        method="POST",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 403 and "CSRF token" in reply.text
    with Client(console.address) as c:
        assert c.get_model("det").production_version == 1


def test_a_basic_authorization_header_does_not_bypass_csrf(console):
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic dXNlcjpwYXNz"}
    form = b"version=2&stage=production&reason=ship"
    reply = http(console_url(console), "/models/det/promote", method="POST", data=form, headers=headers)
    assert reply.status == 403 and "CSRF token" in reply.text
    with Client(console.address) as c:
        assert c.get_model("det").production_version == 1


def test_a_cross_origin_post_is_refused_even_with_the_csrf_token_whose_cookie_is_secure_over_https(console):
    base = console_url(console)
    own = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": "modelreg_csrf=tok", "HX-Request": "true"}
    form = b"csrf=tok&version=2&stage=production&reason=forged"
    for forged, says in (
        ({"Origin": "http://evil.example"}, "another origin (http://evil.example"),
        ({"Sec-Fetch-Site": "cross-site"}, "another site (Sec-Fetch-Site: cross-site)"),
        ({"Sec-Fetch-Site": "same-site", "Origin": base}, "another site (Sec-Fetch-Site: same-site)"),
    ):
        reply = http(base, "/models/det/promote", method="POST", data=form, headers={**own, **forged})
        assert reply.status == 403 and says in html_text(reply), (forged, reply.text)
    with Client(console.address) as c:
        assert c.get_model("det").production_version == 1
    plain = http(base, "/").headers["set-cookie"]
    assert plain.startswith("modelreg_csrf=") and "secure" not in plain.lower()
    # uvicorn takes X-Forwarded-Proto from loopback: the request came over https
    behind_tls = http(base, "/", headers={"X-Forwarded-Proto": "https"}).headers["set-cookie"]
    assert behind_tls.startswith("modelreg_csrf=") and "secure" in behind_tls.lower()
    same = {**own, "Origin": base, "Sec-Fetch-Site": "same-origin"}  # the console's own page
    reply = http(base, "/models/det/promote", method="POST", data=form, headers=same)
    assert reply.status == 200 and "v2 moved to production" in reply.text, reply.text


def test_a_nul_in_an_action_reason_is_400_with_the_grpc_edges_message(console):
    base = console_url(console)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": "modelreg_csrf=tok",
        "HX-Request": "true",
    }
    form = b"csrf=tok&version=2&stage=staging&reason=a%00b"
    reply = http(base, "/models/det/promote", method="POST", data=form, headers=headers)
    assert reply.status == 400, reply.text
    message = html_text(reply)
    assert "contains the NUL character" in message and "remove it and send the request again" in message
    with Client(console.address) as c:
        assert c.get_version("det", 2).stage == res.STAGE_NONE


def test_an_unexpected_error_under_api_is_a_json_500():
    import asyncio
    from types import SimpleNamespace

    import httpx

    from registry_server.console.app import create_app
    from registry_server.domain.access import Caller

    async def authenticate(*_):
        return Caller("console")

    async def list_models(*_):
        raise RuntimeError("boom")

    use_cases = SimpleNamespace(
        access=SimpleNamespace(enabled=False, authenticate=authenticate),
        models=SimpleNamespace(list_models=list_models),
    )

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(create_app(use_cases), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            return await client.get("/api/v1/models")

    reply = asyncio.run(get())
    assert reply.status_code == 500 and reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert error["status"] == "INTERNAL" and "RuntimeError('boom')" in error["message"]


def test_settings_default_the_console_to_8080_and_off_disables_it(monkeypatch):
    monkeypatch.delenv("MODELREG_HTTP_ADDRESS", raising=False)
    assert Settings.from_env().http_listen == ("127.0.0.1", 8080)
    assert DEFAULT_HTTP_ADDRESS == "127.0.0.1:8080"
    assert Settings.from_env(http_address="off").http_listen is None
    assert Settings().http_listen is None  # built in code: off unless asked
    monkeypatch.setenv("MODELREG_HTTP_ADDRESS", "0.0.0.0:9000")
    s = Settings.from_env()
    assert s.http_listen == ("0.0.0.0", 9000) and s.auth_enabled  # reachable from elsewhere: auth auto is on
    monkeypatch.setenv("MODELREG_HTTP_ADDRESS", "localhost:x")
    with pytest.raises(ConfigError, match="MODELREG_HTTP_ADDRESS"):
        Settings.from_env()


def test_a_taken_console_port_stops_the_server_with_a_message(database_url, tmp_path):
    import os
    import socket
    import subprocess

    from conftest import BIN

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = dict(
            os.environ,
            MODELREG_DATA_DIR=str(tmp_path / "d"),
            MODELREG_DATABASE_URL=database_url,
            MODELREG_ADDRESS="127.0.0.1:0",
        )
        proc = subprocess.run(
            [str(BIN / "modelreg"), "server", "--http-listen", f"127.0.0.1:{port}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert proc.returncode == 1, proc.stderr
    assert f"cannot serve the web console on 127.0.0.1:{port}" in proc.stderr
    assert "--http-listen" in proc.stderr and "Traceback" not in proc.stderr


def test_actions_go_through_the_gates_approvals_and_canary_use_cases(make_registry, tmp_path):
    from urllib.parse import urlencode

    from auth_helpers import SecureRegistry, admin_token_of

    reg = make_registry(auth="on", http_address="127.0.0.1:0")
    admin = admin_token_of(tmp_path / "data")
    with grpc.insecure_channel(reg.address) as channel:
        sr = SecureRegistry(reg, reg.address, admin, channel)
        sr.project("vision")
        rita = sr.principal("rita", ("releaser", "vision"))
        rob = sr.principal("rob", ("releaser", "vision"))
    with Client(reg.address, token=admin) as c:
        seed(c, "det", project="vision")
        c.set_gate_policy("det", "production", min={"accuracy": 0.85}, approvals=1)
    base = console_url(reg)

    def post(path: str, token: str, **form):
        headers = {"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true"}
        return http(base, path, token=token, method="POST", data=urlencode(form).encode(), headers=headers)

    failed = post("/models/det/promote", rita, version="3", stage="production", reason="f1 is up")
    assert failed.status == 400, failed.text  # a failed gate: the server's message and its checks
    assert "accuracy" in html_text(failed) and "0.85" in html_text(failed) and "violations" in failed.text
    asked = post("/models/det/promote", rita, version="2", stage="production", reason="v2 is better")
    assert asked.status == 200 and "needs 1 approval(s)" in asked.text, asked.text
    own = post("/models/det/requests/approve", rita, version="2", target="production", reason="me")
    assert own.status == 403 and "four eyes" in html_text(own)
    approved = post("/models/det/requests/approve", rob, version="2", target="production", reason="ok")
    assert approved.status == 200 and "v2 moved to production" in approved.text, approved.text
    with Client(reg.address, token=admin) as c:
        assert c.get_model("det").production_version == 2

    gated = post("/models/det/deployment/canary", rita, version="3", weight="20", reason="try v3")
    assert gated.status == 400 and "cannot start a canary in production" in gated.text  # the same gate
    with Client(reg.address, token=admin) as c:
        c.set_gate_policy("det", "production", min={"accuracy": 0.8}, approvals=1)
    canary = post("/models/det/deployment/canary", rita, version="3", weight="20", reason="try v3")
    assert canary.status == 200 and "canary v3 at 20%" in canary.text, canary.text
    assert http(base, "/api/v1/models/det/deployment", token=rita).json()["deployment"]["canaryWeight"] == 20
    aborted = post("/models/det/deployment/abort-canary", rita, reason="p95 up")
    assert aborted.status == 200 and "canary aborted: v2 serves everything" in aborted.text
    bad = post("/models/det/deployment/canary", rita, version="3", weight="lots", reason="x")
    assert bad.status == 400 and "weight must be a percentage" in bad.text


def html_text(reply) -> str:
    import html

    return html.unescape(reply.text)
