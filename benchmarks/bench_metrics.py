"""Goal 14 (metrics half): what Prometheus metrics cost, on vs off, side by side in one run.

Two `modelreg server` processes on the same Postgres (separate databases, seeded alike),
one with MODELREG_METRICS_ADDRESS on (the gRPC metrics interceptor installed, /metrics
served), one off; two `modelreg agent` processes serving the same tiny ONNX model, one with
`--metrics-listen` on following the "on" server, one with `off` following the "off" server.
While an "on" subject is measured, a scraper thread GETs its /metrics every second (15x
Prometheus's default rate), so rendering is in the figure. Measured: the registry's
GetModelVersion throughput at 16 clients (cycling over 20 versions, as `read_throughput`)
and the agent's Predict p50 at 1 client (as `agent`'s goal 10), on and off alternating, 5
repetitions reversed every other time, medians; and the serving process's CPU per call,
which a busy shared machine disturbs less than wall-clock figures. Goal: on within 1.03x of
off (throughput: off/on, p50: on/off).
"""

from __future__ import annotations

import subprocess
import threading
import urllib.request
from pathlib import Path

from benchmarks.common import alternate, med, ratio, reps_detail
from benchmarks.env import PY, free_port, log, wait_for_port
from benchmarks.report import Row, not_measurable

NAME = "metrics"
GOALS = "14"
MODEL = "bench-metrics"
VERSIONS = 20


class Scraper:
    """GETs a /metrics URL every `interval` s while entered; counts scrapes and bytes."""

    def __init__(self, url: str, interval: float = 1.0):
        self.url, self.interval = url, interval
        self.scrapes = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.bytes += len(urllib.request.urlopen(self.url, timeout=5).read())
                self.scrapes += 1
            except OSError as e:
                log(f"  scrape of {self.url} failed: {e}")

    def __enter__(self) -> Scraper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def _cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _agent(env, registry: str, name: str, metrics: str) -> tuple[int, str]:
    port = free_port()
    cmd = [
        str(Path(PY).parent / "modelreg"),
        "agent",
        "--registry",
        registry,
        "--listen",
        f"127.0.0.1:{port}",
        "--cache-dir",
        str(env.tmp / f"agent-{name}"),
        "--model",
        MODEL,
        "--log-level",
        "WARNING",
        "--report-interval",
        "5",
        "--metrics-listen",
        metrics,
    ]
    log(f"starting agent {name} on 127.0.0.1:{port} (metrics {metrics})")
    proc = subprocess.Popen(
        cmd, cwd=str(env.tmp), stdout=subprocess.DEVNULL, stderr=open(env.tmp / f"agent-{name}.log", "wb")
    )
    env.procs.append(proc)
    wait_for_port(port, 120, proc)
    return proc.pid, f"127.0.0.1:{port}"


def _wait_serving(address: str, timeout: float = 120) -> None:
    import time

    from modelreg.inference import InferenceClient

    deadline = time.monotonic() + timeout
    with InferenceClient(address, timeout=5) as c:
        while not c.is_serving():
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent {address} not SERVING after {timeout}s")
            time.sleep(0.2)


def run(env, cfg) -> list[Row]:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return [not_measurable(GOALS, NAME, "metrics on vs off", f"onnx and onnxruntime ({e})")]
    from benchmarks.bench_agent import onnx_model
    from modelreg import Client

    registry_port, agent_port = free_port(), free_port()
    spawned = {
        "on": env.spawn_server(
            "metrics-on",
            env.database("modelreg_bench_metrics_on"),
            {"MODELREG_METRICS_ADDRESS": f"127.0.0.1:{registry_port}"},
        ),
        "off": env.spawn_server(
            "metrics-off", env.database("modelreg_bench_metrics_off"), {"MODELREG_METRICS_ADDRESS": "off"}
        ),
    }
    servers = {side: address for side, (_, address) in spawned.items()}
    pids = {f"registry_{side}": proc.pid for side, (proc, _) in spawned.items()}
    model = onnx_model(16, 7)
    for side, address in servers.items():
        log(f"seeding {MODEL} on the metrics-{side} server: {VERSIONS} versions")
        with Client(address, actor="bench") as c:
            for i in range(VERSIONS):
                v = c.register(MODEL, model if i == 0 else onnx_model(16, 100 + i), format="onnx", filename="m.onnx")
            c.promote(MODEL, v.version, "production", reason="bench seed")
    started = {
        "on": _agent(env, servers["on"], "metrics-on", f"127.0.0.1:{agent_port}"),
        "off": _agent(env, servers["off"], "metrics-off", "off"),
    }
    agents = {side: address for side, (_, address) in started.items()}
    pids.update({f"agent_{side}": pid for side, (pid, _) in started.items()})
    for address in agents.values():
        _wait_serving(address)

    names = [f"models/{MODEL}/versions/{i}" for i in range(1, VERSIONS + 1)]
    reads = {"op": "get", "names": names, "concurrency": cfg.clients, "duration": cfg.duration}
    one = {"op": "predict", "model": MODEL, "concurrency": 1, "duration": cfg.lat_duration}
    scrapers = {
        "registry": Scraper(f"http://127.0.0.1:{registry_port}/metrics"),
        "agent": Scraper(f"http://127.0.0.1:{agent_port}/metrics"),
    }

    def measured(subject: str, spec: dict, scraper: Scraper | None = None):
        """The load's summary plus the serving process's CPU per call (warm-up included,
        alike on both sides): steadier than wall-clock figures on a shared machine."""

        def go() -> dict:
            before = _cpu_s(pids[subject])
            if scraper is None:
                r = env.load(spec)
            else:
                with scraper:
                    r = env.load(spec)
            r["cpu_us_per_call"] = (_cpu_s(pids[subject]) - before) / max(1, r["count"]) * 1e6
            return r

        return go

    res = alternate(
        cfg.reps if cfg.quick else max(cfg.reps, 5),
        {
            "registry_on": measured("registry_on", dict(reads, target=servers["on"]), scrapers["registry"]),
            "registry_off": measured("registry_off", dict(reads, target=servers["off"])),
            "agent_on": measured("agent_on", dict(one, target=agents["on"]), scrapers["agent"]),
            "agent_off": measured("agent_off", dict(one, target=agents["off"])),
        },
    )
    cpu = {k: med(res, k, "cpu_us_per_call") for k in res}
    tput = {k: med(res, k, "throughput") for k in ("registry_on", "registry_off")}
    p50 = {k: med(res, k, "p50_us") for k in ("agent_on", "agent_off")}
    detail = {
        "throughput_per_rep": reps_detail(res, "throughput"),
        "p50_us_per_rep": reps_detail(res, "p50_us"),
        "cpu_us_per_call_per_rep": reps_detail(res, "cpu_us_per_call"),
        "errors": {k: sum(r["errors"] for r in v) for k, v in res.items()},
        "scrapes": {k: s.scrapes for k, s in scrapers.items()},
        "scrape_bytes": {k: s.bytes // max(1, s.scrapes) for k, s in scrapers.items()},
    }
    note = "scraped every 1 s while measured ({} B per registry scrape, {} B per agent scrape)".format(
        detail["scrape_bytes"]["registry"], detail["scrape_bytes"]["agent"]
    )
    return [
        Row(
            goal=GOALS,
            bench=NAME,
            figure=f"GetModelVersion throughput, metrics on vs off, {cfg.clients} clients",
            ours=tput["registry_on"],
            unit="req/s",
            ref=tput["registry_off"],
            ref_label="metrics off",
            ratio=ratio(tput["registry_off"], tput["registry_on"]),
            ratio_of="off/on",
            target=("<=", 1.03),
            note=note,
            details=detail,
        ),
        Row(
            goal=GOALS,
            bench=NAME,
            figure="agent Predict p50, metrics on vs off, 1 client, tiny model",
            ours=p50["agent_on"],
            unit="µs",
            ref=p50["agent_off"],
            ref_label="metrics off",
            ratio=ratio(p50["agent_on"], p50["agent_off"]),
            ratio_of="on/off",
            target=("<=", 1.03),
            details=detail,
        ),
    ] + [
        Row(
            goal=GOALS,
            bench=NAME,
            figure=f"{what} CPU per call, metrics on vs off",
            ours=cpu[f"{side}_on"],
            unit="µs",
            ref=cpu[f"{side}_off"],
            ref_label="metrics off",
            ratio=ratio(cpu[f"{side}_on"], cpu[f"{side}_off"]),
            ratio_of="on/off",
            note="the serving process's user+system CPU over the window, warm-up included",
            details=detail,
        )
        for side, what in (("registry", "registry GetModelVersion"), ("agent", "agent Predict"))
    ]
