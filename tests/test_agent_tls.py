"""TLS on the agent's inference port, and the agent's credentials toward the registry.

Real `modelreg agent` processes serve a tiny ONNX model from a real registry (auth off);
certificates are made in the test with `trustme`. A client that trusts the agent's CA is
served; a plaintext client, a client trusting another CA and (with --tls-client-ca) a
client without a certificate or with one from another CA are refused with UNAVAILABLE, at
once, not after their deadline. Bad TLS or credential settings stop the agent with one line
and exit 2. A token file rewritten while the agent runs is what its next calls carry.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import trustme
from agent_helpers import BIN, AgentProcess, onnx_scale_model, wait_until
from conftest import ThreadedRegistry, free_port

from modelreg import Client, errors
from modelreg.credentials import Credentials, aio_channel
from modelreg.inference import InferenceClient

pytestmark = pytest.mark.timeout(240)

X = {"x": np.ones((1, 4), np.float32)}
REFUSAL_TIMEOUT = 10.0  # a refused client must fail well before this: a handshake, not a deadline


@dataclass
class Pki:
    """PEM files: the agent's certificate (for 127.0.0.1 and localhost) from `ca`, a
    client certificate from `client_ca`, and `other_ca` with a client certificate of its own."""

    ca: Path
    cert: Path
    key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_cert: Path
    other_key: Path


def _write(tmp: Path, name: str, blob) -> Path:
    path = tmp / name
    blob.write_to_path(str(path))
    return path


@pytest.fixture
def pki(tmp_path) -> Pki:
    d = tmp_path / "pki"
    d.mkdir()
    server_ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("127.0.0.1", "localhost")
    app = client_ca.issue_cert("app-1.example")
    stranger = other_ca.issue_cert("app-2.example")
    return Pki(
        ca=_write(d, "ca.pem", server_ca.cert_pem),
        cert=_write(d, "agent.pem", server.cert_chain_pems[0]),
        key=_write(d, "agent-key.pem", server.private_key_pem),
        client_ca=_write(d, "client-ca.pem", client_ca.cert_pem),
        client_cert=_write(d, "app.pem", app.cert_chain_pems[0]),
        client_key=_write(d, "app-key.pem", app.private_key_pem),
        other_ca=_write(d, "other-ca.pem", other_ca.cert_pem),
        other_cert=_write(d, "stranger.pem", stranger.cert_chain_pems[0]),
        other_key=_write(d, "stranger-key.pem", stranger.private_key_pem),
    )


class TlsAgent(AgentProcess):
    """An agent whose readiness is checked over TLS (and mTLS when `client` holds a cert)."""

    def __init__(self, *args, client_kwargs: dict, **kw):
        super().__init__(*args, **kw)
        self.client_kwargs = client_kwargs

    def client(self):
        return InferenceClient(self.address, timeout=10, **self.client_kwargs)


@pytest.fixture
def tls_agents(tmp_path):
    started: list[AgentProcess] = []

    def start(registry: str, name: str, extra: list[str], client_kwargs: dict) -> TlsAgent:
        a = TlsAgent(
            registry,
            ["tiny"],
            tmp_path / f"cache-{name}",
            tmp_path / f"agent-{name}.log",
            free_port(),
            extra=["--agent-id", name, "--metrics-listen", "off", *extra],
            client_kwargs=client_kwargs,
        ).start()
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()


@pytest.fixture
def tiny(registry):
    """models/tiny v1 (y = x * 3) in production."""
    with Client(registry.address, actor="tester") as c:
        v = c.register("tiny", onnx_scale_model(3.0), filename="tiny.onnx")
        c.promote("tiny", v.version, "production")
    return registry


def refused(address: str, **kwargs) -> errors.ModelregError:
    """Calls Predict and returns the error: it must come at once, as UNAVAILABLE."""
    started = time.monotonic()
    with InferenceClient(address, timeout=REFUSAL_TIMEOUT, **kwargs) as c:
        with pytest.raises(errors.ModelregError) as info:
            c.predict("tiny", X)
    elapsed = time.monotonic() - started
    assert info.value.code == grpc.StatusCode.UNAVAILABLE, info.value
    assert elapsed < REFUSAL_TIMEOUT / 2, f"refused after {elapsed:.1f}s: it hung toward its deadline"
    return info.value


def test_tls_port_serves_a_client_that_trusts_its_ca_and_refuses_plaintext_and_other_cas(tiny, tls_agents, pki):
    agent = tls_agents(
        tiny.address, "tls", ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)], {"ca_cert": pki.ca}
    )
    agent.wait_serving()
    assert f"inference API on {agent.address} over TLS (certificate {pki.cert})" in agent.log()

    with InferenceClient(agent.address, ca_cert=pki.ca, timeout=10) as c:
        r = c.predict("tiny", {"x": np.arange(4, dtype=np.float32).reshape(1, 4)})
    assert r.model_version == "models/tiny/versions/1"
    np.testing.assert_array_equal(r.outputs["y"], np.array([[0, 3, 6, 9]], np.float32))

    refused(agent.address)  # plaintext to a TLS port: the handshake fails, not a hang
    refused(agent.address, ca_cert=pki.other_ca)  # a CA that did not sign the agent's certificate
    assert "Traceback" not in agent.log()


def test_tls_client_ca_requires_a_client_certificate_from_that_ca(tiny, tls_agents, pki):
    agent = tls_agents(
        tiny.address,
        "mtls",
        ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-client-ca", str(pki.client_ca)],
        {"ca_cert": pki.ca, "client_cert": pki.client_cert, "client_key": pki.client_key},
    )
    agent.wait_serving()
    assert "over mTLS (certificate" in agent.log()
    assert f"client certificates required, verified against {pki.client_ca}" in agent.log()

    with InferenceClient(
        agent.address, ca_cert=pki.ca, client_cert=pki.client_cert, client_key=pki.client_key, timeout=10
    ) as c:
        assert c.predict("tiny", X).model_version == "models/tiny/versions/1"
        assert c.is_serving()

    # grpcurl as the README shows it: the agent's CA and the app's certificate.
    certs = ["-cacert", str(pki.ca), "-cert", str(pki.client_cert), "-key", str(pki.client_key)]
    health = subprocess.run(
        [str(BIN / "grpcurl"), *certs, agent.address, "grpc.health.v1.Health/Check"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert health.returncode == 0 and '"status": "SERVING"' in health.stdout, health.stderr
    no_cert = subprocess.run(
        [str(BIN / "grpcurl"), "-cacert", str(pki.ca), agent.address, "grpc.health.v1.Health/Check"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert no_cert.returncode != 0

    refused(agent.address, ca_cert=pki.ca)  # no client certificate
    refused(agent.address, ca_cert=pki.ca, client_cert=pki.other_cert, client_key=pki.other_key)  # another CA's
    refused(agent.address)  # plaintext


def test_inference_client_reads_the_agent_tls_variables_not_the_registry_ones(tiny, tls_agents, pki, monkeypatch):
    agent = tls_agents(
        tiny.address,
        "env",
        ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-client-ca", str(pki.client_ca)],
        {"ca_cert": pki.ca, "client_cert": pki.client_cert, "client_key": pki.client_key},
    )
    agent.wait_serving()
    monkeypatch.setenv("MODELREG_CA_CERT", str(pki.other_ca))  # the registry's CA: not used for the agent
    monkeypatch.setenv("MODELREG_AGENT_CA_CERT", str(pki.ca))
    monkeypatch.setenv("MODELREG_AGENT_CLIENT_CERT", str(pki.client_cert))
    monkeypatch.setenv("MODELREG_AGENT_CLIENT_KEY", str(pki.client_key))
    with InferenceClient(agent.address, timeout=10) as c:
        assert c.predict("tiny", X).model_version == "models/tiny/versions/1"
    with pytest.raises(errors.ModelregError, match=r"cannot read '.*nope.pem': fix ca_cert= \(or MODELREG_AGENT_CA"):
        InferenceClient(agent.address, ca_cert=pki.ca.parent / "nope.pem")
    monkeypatch.delenv("MODELREG_AGENT_CLIENT_KEY")
    with pytest.raises(errors.ModelregError, match="pass client_cert= and client_key= together"):
        InferenceClient(agent.address)


# ------------------------------------------------------------------ bad settings: one line, exit 2


def run_agent(tmp_path: Path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`modelreg agent` with flags that must stop it before it connects to anything."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    full.update(env or {})
    args = [str(BIN / "modelreg"), "agent", "--registry", "127.0.0.1:1", "--model", "tiny"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--metrics-listen", "off", "--listen", f"127.0.0.1:{free_port()}"]
    return subprocess.run([*args, *flags], env=full, capture_output=True, text=True, timeout=60)


def exit_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        (["--tls-cert", "{cert}"], {}, "--tls-cert needs its private key: add --tls-key FILE"),
        (["--tls-key", "{key}"], {}, "--tls-key needs its certificate: add --tls-cert FILE"),
        ([], {"MODELREG_TLS_CERT": "{cert}"}, "--tls-cert needs its private key: add --tls-key FILE"),
        (["--tls-client-ca", "{ca}"], {}, "--tls-client-ca verifies clients of a TLS port: add --tls-cert"),
        (["--tls-cert", "{missing}", "--tls-key", "{key}"], {}, "cannot read the certificate '{missing}'"),
        (["--tls-cert", "{cert}", "--tls-key", "{ca}.nope"], {}, "cannot read the private key"),
        (["--tls-cert", "{key}", "--tls-key", "{key}", "--tls-client-ca", "{empty}"], {}, "is not PEM; fix"),
        (["--token-file", "{missing}"], {}, "cannot read the token file '{missing}'"),
        ([], {"MODELREG_TOKEN_FILE": "{missing}"}, "fix --token-file or MODELREG_TOKEN_FILE"),
        (["--ca-cert", "{missing}"], {}, "cannot read the CA certificate '{missing}'"),
        ([], {"MODELREG_CLIENT_CERT": "{cert}"}, "a client certificate needs its key"),
    ],
)
def test_a_bad_tls_or_credential_setting_stops_the_agent_with_one_line_and_exit_2(tmp_path, pki, flags, env, expected):
    (tmp_path / "empty.pem").write_text("")
    values = {
        "cert": str(pki.cert),
        "key": str(pki.key),
        "ca": str(pki.ca),
        "missing": str(tmp_path / "missing.pem"),
        "empty": str(tmp_path / "empty.pem"),
    }
    proc = run_agent(
        tmp_path, *(f.format(**values) for f in flags), env={k: v.format(**values) for k, v in env.items()}
    )
    assert proc.returncode == 2, proc.stderr
    line = exit_line(proc)
    assert line.startswith("modelreg agent: "), line
    assert expected.format(**values) in line


# ------------------------------------------------------------------ the token the agent sends


class TokenRecorder(grpc.aio.ServerInterceptor):
    """Records (method, authorization) of every call a real server receives from `actor`
    (its x-modelreg-actor; None: every call)."""

    def __init__(self, actor: str | None = None) -> None:
        self.actor = actor
        self._lock = threading.Lock()
        self.seen: list[tuple[float, str, str]] = []

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        md = dict(details.invocation_metadata or ())
        if self.actor is None or md.get("x-modelreg-actor") == self.actor:
            with self._lock:
                self.seen.append((time.monotonic(), details.method, md.get("authorization", "")))
        return await continuation(details)

    def since(self, t: float) -> list[tuple[str, str]]:
        with self._lock:
            return [(m, a) for at, m, a in self.seen if at >= t]


class RecordedRegistry(ThreadedRegistry):
    def __init__(self, settings, recorder: TokenRecorder):
        self.recorder = recorder
        super().__init__(settings)

    async def _start(self):
        from registry_server.app import start

        return await start(self.settings, interceptors=[self.recorder])


@pytest.fixture
def token_registry(database_url, tmp_path):
    from registry_server.config import Settings

    settings = Settings(
        address="127.0.0.1:0",
        database_url=database_url,
        data_dir=tmp_path / "data",
        artifacts=str(tmp_path / "artifacts"),
        bookmark_interval=1.0,
        shutdown_grace=0.5,
    )
    recorder = TokenRecorder("agent:tok")
    reg = RecordedRegistry(settings, recorder)
    yield reg, recorder
    reg.stop()


def test_every_agent_call_carries_the_token_file_and_a_rewrite_is_picked_up_without_restart(
    token_registry, agents, tmp_path
):
    reg, recorder = token_registry
    token_file = tmp_path / "agent.token"
    token_file.write_text("first-secret\n")
    with Client(reg.address, actor="tester") as c:
        c.promote("tok", c.register("tok", onnx_scale_model(1.0), filename="t.onnx").version, "production")
        started = time.monotonic()
        agent = agents(reg.address, ["tok"], name="tok", extra=["--token-file", str(token_file)])
        agent.wait_serving()
        wait_until(
            lambda: "/modelreg.v1.AgentService/ReportAgentStatus" in {m for m, _ in recorder.since(started)},
            30,
            what="a status report",
        )
        first = recorder.since(started)
        methods = {m for m, _ in first}
        assert {"/modelreg.v1.EventService/WatchEvents", "/modelreg.v1.RegistryService/DownloadArtifact"} <= methods
        assert {a for _, a in first} == {"Bearer first-secret"}, first
        log = agent.log()
        assert re.search(rf"registry token +from {re.escape(str(token_file))} \(re-read when it changes\)", log), log
        assert re.search(r"registry transport +plaintext", log), log
        assert "first-secret" not in log  # the secret is never printed

        rotated = tmp_path / "agent.token.new"
        rotated.write_text("second-secret\n")
        os.replace(rotated, token_file)  # how a secret mount or a rotation script swaps it
        rotated_at = time.monotonic()
        wait_until(
            lambda: (
                ("/modelreg.v1.AgentService/ReportAgentStatus", "Bearer second-secret") in recorder.since(rotated_at)
            ),
            30,
            what="a status report with the rewritten token",
        )
        switched = time.monotonic()  # the agent has read the new file: from now on only it is sent
        # A promotion after the rotation: its download carries the new token too.
        c.promote("tok", c.register("tok", onnx_scale_model(2.0), filename="t.onnx").version, "production")
        with agent.client() as ic:
            wait_until(lambda: ic.predict("tok", X).model_version == "models/tok/versions/2", 60, what="v2 served")
        wait_until(lambda: len(recorder.since(time.monotonic() - 0.5)) > 0, 10, what="a report after v2")
        later = recorder.since(switched)
        assert ("/modelreg.v1.RegistryService/DownloadArtifact", "Bearer second-secret") in later
        assert {a for _, a in later} == {"Bearer second-secret"}, later
        assert agent.proc is not None and agent.proc.poll() is None  # the same process throughout


def test_a_rewritten_token_file_is_sent_on_the_next_call_of_an_open_channel(tmp_path):
    """modelreg.credentials on its own: one asyncio channel, a real server, two tokens."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    token_file = tmp_path / "t"
    token_file.write_text("one\n")

    async def scenario() -> list[str]:
        recorder = TokenRecorder()
        server = grpc.aio.server(interceptors=[recorder])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = aio_channel(f"127.0.0.1:{port}", Credentials(token_file=token_file))
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            token_file.write_text("two\n")
            stamp = token_file.stat().st_mtime + 1  # a rewrite within the same clock tick: still a change
            os.utime(token_file, (stamp, stamp))
            await asyncio.sleep(1.1)  # the file is looked at once a second at most
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        finally:
            await channel.close()
            await server.stop(0)
        return [a for _, a in recorder.since(0)]

    assert asyncio.run(scenario()) == ["Bearer one", "Bearer two"]
