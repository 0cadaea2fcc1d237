"""Prometheus metrics of both processes, checked by the real tools: the registry (threaded,
real Postgres) and a real `modelreg agent` process serve /metrics; `promtool check metrics`
lints both expositions; a real Prometheus server scrapes both and answers queries for a
series of each, and for every expression of the shipped Grafana dashboard; every metric the
dashboard names exists in a real scrape. The Prometheus tests skip only where Debian's
`prometheus` package (promtool, prometheus) is not installed (CI installs it, see .ci/run)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from agent_helpers import agent_metrics, onnx_scale_model, parse_metrics, wait_until
from conftest import free_port

from modelreg import errors

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "modelreg.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).exists(), reason="promtool is not installed (apt-get install prometheus)"
)
needs_prometheus = pytest.mark.skipif(
    not Path(PROMETHEUS).exists(), reason="the prometheus server is not installed (apt-get install prometheus)"
)
REGISTRY_SERVICE = "modelreg.v1.RegistryService"


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def metrics_port(registry) -> int:
    assert registry.running.metrics_server is not None, "the registry serves no /metrics"
    return registry.running.metrics_server.port


@pytest.fixture
def fleet(make_registry, agents, tmp_path):
    """A registry with metrics on, a model in production with a canary, and an agent serving
    it with metrics on; some traffic through both. Returns (registry, its metrics port,
    agent, its metrics port)."""
    from modelreg import Client

    registry = make_registry(metrics_address="127.0.0.1:0")
    c = Client(registry.address, actor="tester")
    v1 = c.register("fleet", onnx_scale_model(1.0), filename="f.onnx")
    c.promote("fleet", v1.version, "production")
    v2 = c.register("fleet", onnx_scale_model(2.0), filename="f.onnx")
    c.set_canary("fleet", v2.version, 50)
    c.get_version("fleet", "production")
    with pytest.raises(errors.NotFound):
        c.get_version("fleet", 99)
    c.download("fleet", "production", dest=tmp_path / "dl")
    c.close()
    port = free_port()
    agent = agents(registry.address, ["fleet"], extra=["--metrics-listen", f"127.0.0.1:{port}"])
    agent.wait_serving()
    wait_until(lambda: len(served_versions(agent)) == 2, 60, what="both versions serving")
    with agent.client() as ic:
        for i in range(40):
            ic.predict("fleet", {"x": np.ones((1, 4), np.float32)}, routing_key=f"user-{i}")
    return registry, metrics_port(registry), agent, port


def served_versions(agent) -> set[int]:
    with agent.client() as c:
        return {v.version for v in c.serving_status(["fleet"]).models[0].versions}


def test_registry_serves_no_metrics_by_default(registry):
    assert registry.running.metrics_server is None
    assert dict(registry.settings.describe())["metrics_address"] == "off"


def test_registry_metrics_count_rpcs_registrations_promotions_and_artifacts(fleet):
    registry, port, _, _ = fleet
    m = parse_metrics(scrape(port))
    rpc = f'grpc_service="{REGISTRY_SERVICE}"'
    assert m[f'grpc_server_handled_total{{grpc_type="unary",{rpc},grpc_method="GetModelVersion",grpc_code="OK"}}'] >= 1
    # the aborted call is counted with the code the caller got
    assert (
        m[f'grpc_server_handled_total{{grpc_type="unary",{rpc},grpc_method="GetModelVersion",grpc_code="NOT_FOUND"}}']
        == 1
    )
    register = f'{{grpc_type="client_stream",{rpc},grpc_method="RegisterModelVersion"}}'
    assert m[f"grpc_server_started_total{register}"] == 2
    assert m[f"grpc_server_msg_received_total{register}"] >= 4  # a header and a chunk each, at least
    assert m[f"grpc_server_msg_sent_total{register}"] == 2
    assert m[f"grpc_server_handling_seconds_count{register}"] == 2
    download = f'{{grpc_type="server_stream",{rpc},grpc_method="DownloadArtifact"}}'
    assert m[f"grpc_server_msg_sent_total{download}"] >= 2  # a header and the bytes
    size = len(onnx_scale_model(1.0))
    assert m['modelreg_registry_artifact_bytes_total{store="local",direction="in"}'] == 2 * size
    assert m['modelreg_registry_artifact_bytes_total{store="local",direction="out"}'] >= size
    assert m['modelreg_registry_artifact_upload_seconds_count{store="local"}'] == 2
    assert m['modelreg_registry_registrations_total{outcome="ok"}'] == 2
    assert m['modelreg_registry_promotions_total{stage="production",outcome="ok"}'] == 1
    assert m['modelreg_registry_group_commit_batch_size_count{queue="registrations"}'] >= 1
    assert m['modelreg_registry_events_total{type="DEPLOYMENT_CHANGED"}'] >= 2  # promotion and canary
    assert m["modelreg_registry_read_cache_misses_total"] >= 1
    assert m["modelreg_registry_read_cache_invalidations_total"] >= 1
    assert m['modelreg_registry_db_pool_connections{state="idle"}'] >= 1
    assert m["modelreg_registry_db_round_trip_seconds_count"] >= 1
    # the agent watches: one open stream, and the canary's event reached it
    assert m["modelreg_registry_watch_streams"] == 1
    assert (
        m[
            'grpc_server_started_total{grpc_type="server_stream",grpc_service="modelreg.v1.EventService",grpc_method="WatchEvents"}'
        ]
        == 1
    )  # noqa: E501
    # a failed promotion is counted by its code
    from modelreg import Client

    with Client(registry.address) as c, pytest.raises(errors.NotFound):
        c.promote("fleet", 42, "staging")
    m = parse_metrics(scrape(port))
    assert m['modelreg_registry_promotions_total{stage="staging",outcome="NOT_FOUND"}'] == 1


def test_agent_metrics_split_by_version_and_follow_the_watch(fleet):
    _, _, agent, port = fleet
    m = agent_metrics(port)
    ok = [m[f'modelreg_inference_requests_total{{model="fleet",version="{v}",outcome="ok"}}'] for v in (1, 2)]
    assert sum(ok) == 40 and all(n > 0 for n in ok), f"a 50 % canary split served {ok}"
    assert m['modelreg_inference_queue_duration_seconds_count{model="fleet",version="1"}'] == ok[0]
    assert m['modelreg_agent_serving_versions{model="fleet"}'] == 2
    assert m['modelreg_agent_canary_share{model="fleet"}'] == 0.5
    assert m['modelreg_agent_loads_total{model="fleet"}'] == 2
    assert m['modelreg_agent_download_bytes_total{model="fleet"}'] == 2 * len(onnx_scale_model(1.0))
    assert m["modelreg_agent_watch_connected"] == 1
    assert m["modelreg_agent_ready"] == 1
    assert "metrics on http://127.0.0.1:" in agent.log()


@needs_promtool
def test_promtool_accepts_both_expositions(fleet):
    _, registry_port, _, agent_port = fleet
    for name, port in (("registry", registry_port), ("agent", agent_port)):
        text = scrape(port)
        proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"promtool rejects the {name}'s metrics:\n{proc.stdout}{proc.stderr}"


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", []) if t.get("expr")]


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions
    (followed by '('), label names (inside {} or by(...)), durations or keywords."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    e = re.sub(r"\$\{?\w+\}?", "", e)  # Grafana variables
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end() :].lstrip()
        if rest.startswith("(") or m.group() in PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def test_every_metric_the_dashboard_queries_exists_in_a_real_scrape(fleet):
    _, registry_port, _, agent_port = fleet
    board = json.loads(DASHBOARD.read_text())
    assert 38 <= board["schemaVersion"] <= 41
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in board["templating"]["list"])
    exprs = dashboard_exprs()
    assert len(exprs) >= 8
    scraped = {k[0] for k in parse_metrics(scrape(registry_port)) | parse_metrics(scrape(agent_port))}
    wanted = set().union(*(metric_names(e) for e in exprs))
    assert "grpc_server_handling_seconds_bucket" in wanted and "modelreg_inference_duration_seconds_bucket" in wanted
    assert not wanted - scraped, f"the dashboard queries metrics no process exports: {sorted(wanted - scraped)}"


def grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$model", ".+")


@needs_prometheus
def test_prometheus_scrapes_both_processes_and_answers_the_dashboard(fleet, tmp_path):
    _, registry_port, agent, agent_port = fleet
    web = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: modelreg-registry\n    static_configs:\n      - targets: ['127.0.0.1:{registry_port}']\n"
        f"  - job_name: modelreg-agent\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def query(q: str) -> dict:
        url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        return json.loads(urllib.request.urlopen(url, timeout=5).read())

    def has(q: str) -> bool:
        try:
            return bool(query(q)["data"]["result"])
        except OSError:
            return False

    try:
        registry_series = (
            'grpc_server_handled_total{job="modelreg-registry",grpc_method="RegisterModelVersion",grpc_code="OK"}'
        )
        agent_series = 'modelreg_inference_requests_total{job="modelreg-agent",model="fleet",outcome="ok"}'
        wait_until(lambda: has(registry_series) and has(agent_series), 60, what="both processes scraped")
        assert float(query(registry_series)["data"]["result"][0]["value"][1]) == 2
        assert sum(float(r["value"][1]) for r in query(agent_series)["data"]["result"]) == 40
        up = {r["metric"]["job"]: r["value"][1] for r in query("up")["data"]["result"]}
        assert up == {"modelreg-registry": "1", "modelreg-agent": "1"}
        # traffic across a few scrapes, so the dashboard's rates have two points
        with agent.client() as ic:
            for i in range(20):
                ic.predict("fleet", {"x": np.ones((1, 4), np.float32)}, routing_key=f"u{i}")
                time.sleep(0.1)
        for expr in dashboard_exprs():
            answer = query(grafana_to_promql(expr))
            assert answer["status"] == "success", f"Prometheus rejects {expr!r}: {answer}"
        rate = 'sum by (version) (rate(modelreg_inference_requests_total{model="fleet"}[1m]))'
        assert has(rate)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_server_banner_prints_the_metrics_url_and_a_bad_address_is_refused(spawn_registry, tmp_path, database_url):
    from conftest import BIN, wait_for_port

    port = free_port()
    proc, address = spawn_registry(MODELREG_METRICS_ADDRESS=f"127.0.0.1:{port}")
    wait_for_port(port, proc=proc)
    log = tmp_path / f"server-{address.rsplit(':', 1)[1]}.log"
    wait_until(lambda: "metrics on" in log.read_text(), 30, what="the banner")
    assert f"metrics on http://127.0.0.1:{port}/metrics (Prometheus)" in log.read_text()
    assert "grpc_server_started_total" in scrape(port)

    bad = subprocess.run(
        [str(BIN / "modelreg"), "server", "--metrics-listen", "localhost:http"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MODELREG_DATABASE_URL": database_url, "MODELREG_DATA_DIR": str(tmp_path / "d")},
    )
    assert bad.returncode == 2
    assert "'localhost:http' is not host:port" in bad.stderr and "'off' to disable" in bad.stderr


def test_agent_metrics_flags(make_registry, agents, tmp_path):
    from conftest import BIN

    bad = subprocess.run(
        [str(BIN / "modelreg"), "agent", "--model", "m", "--metrics-listen", "nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--metrics-listen 'nowhere' is not host:port" in bad.stderr
    registry = make_registry()
    port = free_port()
    # --metrics-port is a synonym; MODELREG_METRICS_ADDRESS=off turns the default off
    a = agents(registry.address, ["m"], name="p", extra=["--metrics-port", str(port)])
    b = agents(registry.address, ["m"], name="off", env={"MODELREG_METRICS_ADDRESS": "off"})
    wait_until(lambda: "inference API on" in a.log() and "inference API on" in b.log(), 60, what="both started")
    assert f"metrics on http://127.0.0.1:{port}/metrics" in a.log()
    assert "modelreg_agent_ready 0.0" in scrape(port)  # nothing to serve yet
    assert "metrics on" not in b.log()


def test_agent_runs_without_metrics_when_the_default_address_is_busy(make_registry, agents):
    import socket

    registry = make_registry()
    holder = socket.socket()
    try:
        with contextlib.suppress(OSError):  # already taken by someone else: the same case
            holder.bind(("127.0.0.1", 9464))
            holder.listen()
        a = agents(registry.address, ["m"], name="busy")  # no metrics flag: the default address
        wait_until(lambda: "inference API on" in a.log(), 60, what="the agent started")
        assert "cannot serve metrics on 127.0.0.1:9464" in a.log() and "running without metrics" in a.log()
        assert a._alive()
    finally:
        holder.close()


def test_a_busy_registry_metrics_address_is_a_startup_error(make_registry):
    import socket

    from registry_server.errors import StartupError

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot serve metrics on 127.0.0.1:{port}.*a free host:port"):
            make_registry(metrics_address=f"127.0.0.1:{port}")


@pytest.mark.parametrize("which", ["--listen", "--metrics-listen"])
def test_an_agent_whose_address_is_taken_exits_1_with_one_line(make_registry, tmp_path, which):
    """A busy inference or (explicit) metrics address is a start-up error: one line naming the
    flag to change, exit status 1, no traceback."""
    import socket

    from conftest import BIN

    registry = make_registry()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = f"127.0.0.1:{holder.getsockname()[1]}"
        flags = (
            ["--listen", busy]
            if which == "--listen"
            else ["--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", busy]
        )
        proc = subprocess.run(
            [
                str(BIN / "modelreg"),
                "agent",
                "--registry",
                registry.address,
                "--model",
                "m",
                "--cache-dir",
                str(tmp_path / "cache"),
                *flags,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("modelreg agent: cannot ") and which in last, proc.stderr
    assert "Traceback" not in proc.stderr
