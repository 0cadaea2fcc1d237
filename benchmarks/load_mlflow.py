"""The peer's load generator: runs in benchmarks/.venv-mlflow (MLflow 3), never in ours.

`benchmarks/.venv-mlflow/bin/python benchmarks/load_mlflow.py SPEC_JSON` prints one JSON
object like `load_grpc`. Threads stand for clients. Two ways in, both reported:
  client  MlflowClient (requests.Session underneath, connections kept alive)
  fresh   raw HTTP/1.1 with a new TCP connection per request (http.client)
  keepalive  raw HTTP/1.1 on one persistent connection per client (splits MlflowClient's
          own cost from the server's)
Ops: get (model-versions/get), latest (registered-models/get-latest-versions, Production),
transition (model-versions/transition-stage to Production, archiving the current one),
alias (registered-models/alias: point `production` at a version), create
(model-versions/create), seed (a registered model with n versions, `production_version`
in Production and aliased `production`).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

from mlflow.tracking import MlflowClient  # noqa: E402


class Fresh:
    """REST calls on a new connection each time: no keep-alive reuse at all. With
    `keepalive`, one persistent raw connection instead (no MlflowClient on top)."""

    def __init__(self, uri: str, keepalive: bool = False):
        hostport = uri.split("://", 1)[1].rstrip("/")
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.keepalive = keepalive
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60) if keepalive else None

    def _req(self, method: str, path: str, body: dict | None = None) -> dict:
        conn = self.conn or http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            payload = json.dumps(body) if body is not None else None
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
            return json.loads(data) if data else {}
        finally:
            if not self.keepalive:
                conn.close()

    def get(self, name: str, version: int) -> None:
        self._req("GET", f"/api/2.0/mlflow/model-versions/get?name={name}&version={version}")

    def latest(self, name: str) -> list:
        r = self._req(
            "POST", "/api/2.0/mlflow/registered-models/get-latest-versions", {"name": name, "stages": ["Production"]}
        )
        return r.get("model_versions", [])

    def transition(self, name: str, version: int) -> None:
        self._req(
            "POST",
            "/api/2.0/mlflow/model-versions/transition-stage",
            {"name": name, "version": str(version), "stage": "Production", "archive_existing_versions": True},
        )

    def alias(self, name: str, version: int) -> None:
        self._req(
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            {"name": name, "alias": "production", "version": str(version)},
        )

    def create(self, name: str, source: str) -> int:
        r = self._req("POST", "/api/2.0/mlflow/model-versions/create", {"name": name, "source": source})
        return int(r["model_version"]["version"])


class Client:
    def __init__(self, uri: str):
        self.c = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def get(self, name: str, version: int) -> None:
        self.c.get_model_version(name, str(version))

    def latest(self, name: str) -> list:
        return self.c.get_latest_versions(name, stages=["Production"])

    def transition(self, name: str, version: int) -> None:
        self.c.transition_model_version_stage(name, str(version), "Production", archive_existing_versions=True)

    def alias(self, name: str, version: int) -> None:
        self.c.set_registered_model_alias(name, "production", str(version))

    def create(self, name: str, source: str) -> int:
        return int(self.c.create_model_version(name, source).version)


def _call(api, spec: dict, worker: int, i: int, out: dict) -> None:
    op = spec["op"]
    if op == "get":
        keys = spec["keys"]  # [[name, version], ...]
        name, version = keys[(worker + i) % len(keys)]
        api.get(name, version)
    elif op == "latest":
        found = api.latest(spec["name"])
        if not found:
            raise RuntimeError("get-latest-versions returned no Production version")
    elif op == "transition":
        versions = spec["versions"]
        api.transition(spec["name"], versions[i % len(versions)])
    elif op == "alias":
        versions = spec["versions"]
        api.alias(spec["name"], versions[i % len(versions)])
    elif op == "create":
        out.setdefault("versions", []).append(api.create(spec["name"], f"s3://bench/{spec['name']}/{worker}-{i}"))
    else:
        raise SystemExit(f"unknown op {op!r}")


def measure(spec: dict) -> dict:
    mode = spec.get("mode", "client")
    if mode == "client":
        make = Client
    elif mode == "keepalive":
        make = lambda uri: Fresh(uri, keepalive=True)  # noqa: E731
    else:
        make = Fresh
    concurrency = spec.get("concurrency", 1)
    apis = [make(spec["uri"]) for _ in range(concurrency)]
    latencies: list[float] = []
    errors: list[str] = []
    extra: dict = {}
    lock = threading.Lock()
    warmup = spec.get("warmup_calls", 3)

    def run(w: int) -> None:
        out: dict = {}
        for i in range(warmup):
            _call(apis[w], spec, w, i, {})
        barrier.wait()
        start_at = spec.get("start_at") or time.time()
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        deadline = start_at + spec["duration"] if spec.get("duration") else None
        count = spec.get("count")
        mine: list[float] = []
        errs: list[str] = []
        i = warmup
        done = 0
        while (count is None or done < count) and (deadline is None or time.time() < deadline):
            t0 = time.perf_counter()
            try:
                _call(apis[w], spec, w, i, out)
                mine.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - the peer's failures are a result
                errs.append(f"{type(e).__name__}: {str(e)[:160]}")
            i += 1
            done += 1
        with lock:
            latencies.extend(mine)
            errors.extend(errs)
            for k, v in out.items():
                extra.setdefault(k, []).extend(v)

    barrier = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=run, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start_at = spec.get("start_at") or time.time()
    t0 = time.perf_counter() + max(0.0, start_at - time.time())
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {
        "latencies": latencies,
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "elapsed_s": elapsed,
        "extra": extra,
    }


def seed(spec: dict) -> dict:
    """A registered model with n versions, created by `concurrency` threads."""
    c = MlflowClient(tracking_uri=spec["uri"], registry_uri=spec["uri"])
    name, n = spec["name"], spec["n"]
    c.create_registered_model(name)
    fresh = Fresh(spec["uri"])
    per = [list(range(w, n, spec.get("concurrency", 4))) for w in range(spec.get("concurrency", 4))]
    failures: list[str] = []

    def run(items: list[int]) -> None:
        for i in items:
            try:
                fresh.create(name, f"s3://bench/{name}/{i}")
            except Exception as e:  # noqa: BLE001
                failures.append(str(e)[:160])

    threads = [threading.Thread(target=run, args=(p,)) for p in per]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    versions = sorted(int(v.version) for v in c.search_model_versions(f"name='{name}'", max_results=200000))
    prod = spec.get("production_version")
    if prod:
        c.transition_model_version_stage(name, str(prod), "Production", archive_existing_versions=True)
        c.set_registered_model_alias(name, "production", str(prod))
    return {
        "versions": len(versions),
        "max_version": versions[-1] if versions else 0,
        "failures": failures[:5],
        "failed": len(failures),
        "elapsed_s": elapsed,
    }


def versions_of(spec: dict) -> dict:
    c = MlflowClient(tracking_uri=spec["uri"], registry_uri=spec["uri"])
    found = sorted(int(v.version) for v in c.search_model_versions(f"name='{spec['name']}'", max_results=200000))
    return {"versions": found}


def create_model(spec: dict) -> dict:
    MlflowClient(tracking_uri=spec["uri"], registry_uri=spec["uri"]).create_registered_model(spec["name"])
    return {}


if __name__ == "__main__":
    mode, spec = sys.argv[1], json.loads(sys.argv[2])
    fn = {"measure": measure, "seed": seed, "versions": versions_of, "create_model": create_model}[mode]
    json.dump(fn(spec), sys.stdout)
