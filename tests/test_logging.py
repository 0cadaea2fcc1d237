"""Structured logs: `--log-format json` (or MODELREG_LOG_FORMAT=json) on both processes writes
one JSON object per line with time, level, logger and message, the trace and span ids when
tracing, and the principal of an audited action; no secret appears in any line.

The registry is a real `modelreg server` process on S3 (SeaweedFS, with its secret key) and
a database URL carrying a password; its log file is read as an operator's log shipper would.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
from urllib.parse import urlparse

import pytest
from agent_helpers import onnx_scale_model, wait_until
from conftest import BIN
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from otlp_helpers import running_collector

from modelreg import Client
from modelreg_runtime import logs

PASSWORD = "pg-Secret-3e7d"
KEYS = {"time", "level", "logger", "message"}


def json_lines(text: str) -> list[dict]:
    """Every JSON object line of a log (the banner on stdout is plain text)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def with_password(url: str) -> str:
    """The test database's URL with a password in it (the embedded server trusts local
    connections, so it is sent and ignored)."""
    p = urlparse(url)
    user = p.username or "postgres"
    host = p.hostname or ""
    port = f":{p.port}" if p.port else ""
    return p._replace(netloc=f"{user}:{PASSWORD}@{host}{port}").geturl()


@pytest.fixture
def collector():
    yield from running_collector()


def test_registry_json_logs_carry_trace_ids_and_the_principal_and_no_secret(
    spawn_registry, database_url, seaweedfs, s3_bucket, collector, tmp_path
):
    proc, address = spawn_registry(
        MODELREG_DATABASE_URL=with_password(database_url),
        MODELREG_LOG_FORMAT="json",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="100",
        **seaweedfs.registry_env(s3_bucket),
    )
    provider = TracerProvider()  # the app's own tracing, not installed globally
    with Client(address, actor="alice") as client, provider.get_tracer("app").start_as_current_span("ship") as root:
        v = client.register("logged", onnx_scale_model(1.0), filename="logged.onnx")
        client.promote("logged", v.version, "production", reason="ship it")
    log_path = tmp_path / f"server-{address.rsplit(':', 1)[1]}.log"

    def audited() -> list[dict]:
        return [r for r in json_lines(log_path.read_text()) if r.get("principal") == "alice"]

    records = wait_until(lambda: len(audited()) >= 2 and audited(), 10, what="the audited log lines")
    proc.terminate()
    proc.wait(15)
    text = log_path.read_text()

    lines = json_lines(text)
    assert lines and all(KEYS <= r.keys() for r in lines)
    registered = next(r for r in records if r["message"].startswith("registered models/logged/versions/1"))
    assert registered["level"] == "INFO" and registered["logger"] == "registry_server.usecases.models"
    assert registered["time"].endswith("Z")
    # The line was written inside the app's trace, carried into the server by traceparent.
    assert registered["trace_id"] == f"{root.get_span_context().trace_id:032x}"
    assert len(registered["span_id"]) == 16
    assert any("moved models/logged/versions/1 to production" in r["message"] for r in records)
    # Lines outside a request carry no ids; lines without an actor carry no principal.
    assert any("trace_id" not in r and "principal" not in r for r in lines)

    assert PASSWORD not in text
    assert seaweedfs.secret_key not in text


def test_agent_json_logs(registry, agents):
    with Client(registry.address) as client:
        v = client.register("scaler", onnx_scale_model(1.0), filename="scaler.onnx")
        client.promote("scaler", v.version, "production")
    agent = agents(registry.address, ["scaler"], extra=["--log-format", "json"])
    agent.wait_serving()
    lines = wait_until(
        lambda: [r for r in json_lines(agent.log()) if "serving (download" in r["message"]], 10, what="a JSON line"
    )
    assert lines[0]["logger"] == "modelreg.agent" and lines[0]["level"] == "INFO"
    assert all(KEYS <= r.keys() for r in json_lines(agent.log()))


def test_an_unknown_log_format_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELREG_", "OTEL_"))}
    proc = subprocess.run(
        [str(BIN / "modelreg"), "server"],
        env={**env, "MODELREG_LOG_FORMAT": "xml", "MODELREG_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "MODELREG_LOG_FORMAT='xml' is not a log format: use text or json" in proc.stderr
    proc = subprocess.run(
        [str(BIN / "modelreg"), "agent", "--model", "m", "--log-format", "xml"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'xml'" in proc.stderr


def test_redaction_masks_secrets_in_text_and_json():
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        for fmt in ("text", "json"):
            logs.configure("INFO", fmt)
            out = io.StringIO()
            root.handlers[0].setStream(out)  # type: ignore[attr-defined]
            logs.redact([PASSWORD, "abc"])  # under 4 characters: not masked (it would mask words)
            logging.getLogger("modelreg.test").warning("connecting to postgresql://u:%s@db/abc", PASSWORD)
            line = out.getvalue().strip()
            assert PASSWORD not in line and "u:****@db/abc" in line
            if fmt == "json":
                assert json.loads(line)["message"] == "connecting to postgresql://u:****@db/abc"
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_json_lines_carry_the_current_span(monkeypatch):
    from modelreg_runtime import tracing

    provider = TracerProvider()
    record = logging.LogRecord("modelreg.x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.principal = "bob"
    tracing.uninstall()
    assert json.loads(logs.JsonFormatter().format(record)).keys() == KEYS | {"principal"}
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("t"))
    with tracing.span("work") as span:
        entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == "hello world" and entry["principal"] == "bob"
    assert entry["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert entry["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert trace.get_current_span() is not span
