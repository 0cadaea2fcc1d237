"""Helpers for the console's tests: HTTP calls against a registry's console port (urllib:
the standard library, like a curl user), and the seeded model the browser tests use."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from onnx_helpers import onnx_bytes


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http(
    base: str, path: str, *, token: str = "", method: str = "GET", data: bytes | None = None, headers=None
) -> Reply:
    request = urllib.request.Request(base + path, method=method, data=data, headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def console_url(registry) -> str:
    return f"http://127.0.0.1:{registry.running.console.port}"


# Three versions with different metric keys and per-epoch histories (the seed).
SEED = [
    dict(
        metrics={"accuracy": 0.81, "loss": 0.52},
        metric_history={"loss": [(1, 1.2), (2, 0.8), (3, 0.52)], "accuracy": [(1, 0.6), (2, 0.75), (3, 0.81)]},
        config={"lr": 0.01, "epochs": 3},
    ),
    dict(
        metrics={"accuracy": 0.86, "loss": 0.41, "map50": 0.62},
        metric_history={"loss": [(1, 1.1), (2, 0.7), (3, 0.5), (4, 0.41)], "map50": [(1, 0.3), (4, 0.62)]},
        config={"lr": 0.005, "epochs": 4},
        parent_version=1,
    ),
    dict(
        metrics={"accuracy": 0.84, "f1": 0.79},
        metric_history={"loss": [(1, 1.0), (2, 0.6), (3, 0.45)]},
        config={"lr": 0.005, "epochs": 3, "augment": True},
        parent_version=2,
    ),
]


def weights(i: int) -> bytes:
    """The ONNX bytes of seed version `i` (the same within a test run: downloads compare them)."""
    if i not in _WEIGHTS:
        _WEIGHTS[i] = onnx_bytes(64 * i)
    return _WEIGHTS[i]


_WEIGHTS: dict[int, bytes] = {}


def seed(client, model: str = "det", project: str = "") -> None:
    """Registers the three SEED versions of `model` (v1 in production), with a default config."""
    client.create_model(model, project=project, default_config={"lr": 0.01, "epochs": 3, "imgsz": 640})
    for i, spec in enumerate(SEED, 1):
        client.register(model, weights(i), filename="model.onnx", dataset_id="coco-mini", **spec)
    client.promote(model, 1, "production", reason="first release")
