"""Prometheus metrics in the text exposition format (0.0.4), served over plain HTTP.

prometheus_client is not a dependency; this module writes the format itself:
    modelreg_agent_requests_total{model,version,method}            counter
    modelreg_agent_request_errors_total{model,version,method,code} counter
    modelreg_agent_request_duration_seconds{model,version}          histogram
    modelreg_agent_swaps_total{model}                               counter
    modelreg_agent_loads_total{model}                               counter (fetch + load + warm-up)
    modelreg_agent_standby_versions{model}                          gauge (loaded, kept warm, not routed)
    modelreg_agent_load_failures_total{model,stage}                 counter
    modelreg_agent_load_duration_seconds{model,version}             gauge (load + warm-up)
    modelreg_agent_download_duration_seconds{model,version}         gauge (0: cache hit)
    modelreg_agent_version_state{model,version,state}               gauge (1 for the current state)
    modelreg_agent_ready                                            gauge (1 once every model serves)
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
from collections import defaultdict

log = logging.getLogger("modelreg.agent.metrics")

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HELP = {
    "modelreg_agent_requests_total": ("counter", "Inference requests served, per model version and method."),
    "modelreg_agent_request_errors_total": ("counter", "Inference requests that failed, per model version."),
    "modelreg_agent_request_duration_seconds": ("histogram", "Inference latency per model version."),
    "modelreg_agent_swaps_total": ("counter", "Versions that started serving (swaps), per model."),
    "modelreg_agent_loads_total": ("counter", "Versions loaded and warmed up (a warm standby swap is no load)."),
    "modelreg_agent_standby_versions": ("gauge", "Versions kept loaded for a quick swap back, taking no requests."),
    "modelreg_agent_load_failures_total": ("counter", "Failed load attempts, per model and stage."),
    "modelreg_agent_load_duration_seconds": ("gauge", "Seconds the last load and warm-up of a version took."),
    "modelreg_agent_download_duration_seconds": ("gauge", "Seconds the download of a version took (0: cache)."),
    "modelreg_agent_version_state": ("gauge", "1 for the state each held version is in."),
    "modelreg_agent_ready": ("gauge", "1 when every followed model has a version serving."),
}


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    inner = ",".join(
        f'{n}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values, strict=True)
    )
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, dict[tuple, float]] = defaultdict(dict)
        self.label_names: dict[str, tuple[str, ...]] = {}
        self.hist: dict[tuple, list] = {}  # (model, version) -> [bucket counts, sum, count]

    def _set(self, name: str, labels: dict[str, object], value: float, add: bool = False) -> None:
        names = tuple(labels)
        key = tuple(labels.values())
        with self.lock:
            self.label_names[name] = names
            series = self.values[name]
            series[key] = series.get(key, 0.0) + value if add else value

    def inc(self, name: str, value: float = 1.0, **labels: object) -> None:
        self._set(name, labels, value, add=True)

    def set(self, name: str, value: float, **labels: object) -> None:
        self._set(name, labels, value)

    def remove(self, name: str, **match: object) -> None:
        """Drops every series of `name` whose labels include `match`."""
        wanted = {k: str(v) for k, v in match.items()}
        with self.lock:
            names = self.label_names.get(name, ())
            series = self.values.get(name, {})
            for key in list(series):
                labels = {n: str(v) for n, v in zip(names, key, strict=True)}
                if all(labels.get(k) == v for k, v in wanted.items()):
                    del series[key]

    def observe(self, seconds: float, model: str, version: int) -> None:
        with self.lock:
            h = self.hist.setdefault((model, str(version)), [[0] * (len(BUCKETS) + 1), 0.0, 0])
            h[0][bisect.bisect_left(BUCKETS, seconds)] += 1
            h[1] += seconds
            h[2] += 1

    def render(self) -> str:
        lines: list[str] = []
        with self.lock:
            for name, (kind, text) in HELP.items():
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                if kind == "histogram":
                    for (model, version), (counts, total, count) in sorted(self.hist.items()):
                        acc = 0
                        for bound, c in zip((*BUCKETS, float("inf")), counts, strict=True):
                            acc += c
                            le = "+Inf" if bound == float("inf") else repr(bound)
                            lines.append(f'{name}_bucket{{model="{model}",version="{version}",le="{le}"}} {acc}')
                        lines.append(f'{name}_sum{{model="{model}",version="{version}"}} {total!r}')
                        lines.append(f'{name}_count{{model="{model}",version="{version}"}} {count}')
                    continue
                names = self.label_names.get(name, ())
                for key, value in sorted(self.values.get(name, {}).items()):
                    lines.append(f"{name}{_labels(names, key)} {value!r}")
        return "\n".join(lines) + "\n"


async def serve_metrics(metrics: Metrics, host: str, port: int) -> asyncio.base_events.Server:
    """A minimal HTTP/1.0 server: GET /metrics returns the exposition, anything else 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.split("?")[0] in ("/metrics", "/"):
                body, status = metrics.render().encode(), "200 OK"
                ctype = "text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, ctype = b"not found: try /metrics\n", "404 Not Found", "text/plain"
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
