"""Helpers for the serving agent tests: tiny ONNX graphs, real `modelreg agent` processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent


def onnx_scale_model(scale: float, *, opset: int = 17) -> bytes:
    """A tiny ONNX graph: y = x * scale, x float32 [N, 4]. The scale tells versions apart."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    s = helper.make_tensor("s", TensorProto.FLOAT, [1], [float(scale)])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "scale", [x], [y], initializer=[s])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    """Polls until `predicate()` returns something truthy and returns it."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


class AgentProcess:
    """A real `modelreg agent` process."""

    def __init__(
        self,
        registry: str,
        models: list[str],
        cache_dir: Path,
        log_path: Path,
        port: int,
        extra: list[str] | None = None,
        env: dict | None = None,
    ):
        self.registry = registry
        self.models = models
        self.cache_dir = cache_dir
        self.log_path = log_path
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.extra = extra or []
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentProcess:
        env = dict(os.environ)
        env.update(YOLO_OFFLINE="1", MODELREG_ACTOR="agent", PYTHONUNBUFFERED="1")
        env.update(self.env)
        args = [
            str(BIN / "modelreg"),
            "agent",
            "--registry",
            self.registry,
            "--listen",
            self.address,
            "--cache-dir",
            str(self.cache_dir),
            "--report-interval",
            "0.5",
            "--retry-initial",
            "0.5",
            "--retry-max",
            "2",
            "--intra-op-threads",
            "1",
        ]
        for m in self.models:
            args += ["--model", m]
        args += self.extra
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def client(self):
        from modelreg.inference import InferenceClient

        return InferenceClient(self.address, timeout=10)

    def wait_serving(self, timeout: float = 90.0) -> None:
        c = self.client()
        try:
            wait_until(
                lambda: self._alive() and c.is_serving(), timeout, what=f"agent {self.address} SERVING:\n" + self.log()
            )
        finally:
            c.close()

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
        return True

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-6000:]
        return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Hammer:
    """Sends Predict requests in a loop from a thread; records every outcome."""

    def __init__(self, address: str, model: str):
        from modelreg.inference import InferenceClient

        self.client = InferenceClient(address, timeout=30)
        self.model = model
        self.versions: list[str] = []
        self.scales: list[float] = []
        self.failures: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        x = np.ones((1, 4), dtype=np.float32)
        while not self.stop_event.is_set():
            try:
                r = self.client.predict(self.model, {"x": x})
                self.versions.append(r.model_version)
                self.scales.append(float(r.outputs["y"][0, 0]))
            except Exception as e:  # noqa: BLE001 - every failure is a test failure, recorded
                self.failures.append(repr(e))

    def __enter__(self) -> Hammer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(15)
        self.client.close()


def serving_states(agent: AgentProcess, model: str) -> dict[int, int]:
    """What the agent says it holds for a model: version -> ServedVersionState."""
    with agent.client() as c:
        return {v.version: v.state for v in c.serving_status([model]).models[0].versions}


class Scrape(dict):
    """Parsed Prometheus samples, keyed by 'name{label="value",...}' in any label order
    (prometheus_client writes labels sorted; tests write them in their natural order)."""

    @staticmethod
    def key(series: str) -> tuple[str, frozenset]:
        import re

        name, _, rest = series.partition("{")
        return name.strip(), frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))

    def __getitem__(self, series: str) -> float:
        return dict.__getitem__(self, self.key(series))

    def __contains__(self, series: object) -> bool:
        return isinstance(series, str) and dict.__contains__(self, self.key(series))


def parse_metrics(text: str) -> Scrape:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = Scrape()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            dict.__setitem__(out, (s.name, frozenset(s.labels.items())), s.value)
    return out


def agent_metrics(port: int) -> Scrape:
    """An agent's Prometheus metrics: 'name{labels}' -> value."""
    import urllib.request

    return parse_metrics(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())


@pytest.fixture
def agents(tmp_path):
    """Starts real `modelreg agent` processes; every one is stopped at the end."""
    from conftest import free_port

    started: list[AgentProcess] = []

    def start(
        registry: str,
        models: list[str],
        name: str = "a1",
        extra=None,
        cache_dir: Path | None = None,
        env: dict | None = None,
    ):
        a = AgentProcess(
            registry,
            models,
            cache_dir or tmp_path / f"cache-{name}",
            tmp_path / f"agent-{name}.log",
            free_port(),
            extra=["--agent-id", name, *(extra or [])],
            env=env,
        ).start()
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()
