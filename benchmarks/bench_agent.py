"""Goals 8 and 10 with real `modelreg agent` processes (and rows for 9 and 12).

Goal 8, promotion -> serving: agents follow two models, a tiny ONNX graph and one with a
~25 MB weight. Each round registers a new version and promotes it; a poller calls Predict on
every agent every few ms and records when each first answers from the new version. The
figure is the time from the promote call returning to the LAST agent serving the new
version (median over rounds), against the bound the issue sets: download (the registry
stream, measured) + 2 x session creation + warm-up (onnxruntime in-process, measured on the
same file) + 100 ms. 1 and 10 agents (50 agents is not measurable on a 2-core machine).

Goal 10, sidecar overhead: Predict through an agent (gRPC on loopback, 1 client) vs
onnxruntime in-process with the same session options, on the tiny model: the added
microseconds. And the same for YOLOv8n at 640 (full run only): exported to ONNX from
`YOLO("yolov8n.yaml")` (random weights, YOLO_OFFLINE=1), its ultralytics metadata removed so
the agent serves it with plain onnxruntime, input `images` float32 [1, 3, 640, 640].
"""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np

from benchmarks.common import alternate, med, ratio
from benchmarks.env import PY, REPO, free_port, log, wait_for_port
from benchmarks.report import Row, not_measurable
from benchmarks.stats import median

NAME = "agent"
GOALS = "8,10"
MIB = 1 << 20


def onnx_model(weight_bytes: int, seed: int) -> bytes:
    """y = x * W[0:1], x float32 [N, 4]; W is float32 [rows, 4] of `weight_bytes`."""
    rows = max(1, weight_bytes // 16)
    return slice_mul_model(np.random.default_rng(seed).random((rows, 4), dtype=np.float32), "bench")


def slice_mul_model(w: np.ndarray, graph_name: str) -> bytes:
    """The ONNX graph y = x * W[0:1] for a float32 W of shape [rows, 4], x float32 [N, 4]: the
    rows past the first only give the file its size. (The chaos suite builds its models too.)"""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.array([0], np.int64), "start"),
        numpy_helper.from_array(np.array([1], np.int64), "end"),
    ]
    nodes = [helper.make_node("Slice", ["W", "start", "end"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
    model = helper.make_model(
        helper.make_graph(nodes, graph_name, [x], [y], initializer=inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    return model.SerializeToString()


class Agents:
    def __init__(self, env, models: list[str]):
        self.env, self.models = env, models
        self.procs: list[subprocess.Popen] = []
        self.addresses: list[str] = []

    def add(self, n: int) -> None:
        from pathlib import Path

        modelreg = Path(PY).parent / "modelreg"
        started = []
        for _ in range(n):
            i = len(self.addresses)
            port = free_port()
            cmd = [
                str(modelreg),
                "agent",
                "--registry",
                self.env.ours,
                "--listen",
                f"127.0.0.1:{port}",
                "--cache-dir",
                str(self.env.tmp / f"agent-{i}"),
                "--log-level",
                "WARNING",
                "--report-interval",
                "5",
            ]
            for m in self.models:
                cmd += ["--model", m]
            proc = subprocess.Popen(
                cmd,
                cwd=str(self.env.tmp),
                stdout=subprocess.DEVNULL,
                stderr=open(self.env.tmp / f"agent-{i}.log", "wb"),
            )
            self.procs.append(proc)
            self.env.procs.append(proc)
            self.addresses.append(f"127.0.0.1:{port}")
            started.append((proc, port))
        for proc, port in started:
            wait_for_port(port, 120, proc)


def yolo_onnx(workdir) -> bytes:
    """YOLOv8n exported to ONNX at 640 without its metadata (served as plain ONNX)."""
    import os

    import onnx

    workdir.mkdir(parents=True, exist_ok=True)
    code = (
        "from ultralytics import YOLO; import sys; "
        "print(YOLO('yolov8n.yaml').export(format='onnx', imgsz=640, simplify=False, dynamic=False))"
    )
    out = subprocess.run(
        [PY, "-c", code],
        cwd=str(workdir),
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, YOLO_OFFLINE="1"),
    )
    if out.returncode != 0:
        raise RuntimeError(f"YOLOv8n export failed: {out.stderr[-1500:]}")
    exported = workdir / out.stdout.strip().splitlines()[-1]  # relative to workdir unless absolute
    model = onnx.load(str(exported))
    del model.metadata_props[:]
    return model.SerializeToString()


def _switch(env, agents: list[str], model: str, data: bytes) -> float:
    """Registers `data` as a new version of `model`, promotes it, and returns the seconds
    from the promote call returning to the last agent answering from it."""
    from modelreg import Client

    with Client(env.ours, actor="bench") as c:
        v = c.register(model, data, format="onnx", filename="model.onnx")
        want = f"models/{model}/versions/{v.version}"
        spec = {"targets": agents, "model": model, "want": want, "interval": 0.003 if len(agents) == 1 else 0.02}
        poller = subprocess.Popen(
            [PY, "-m", "benchmarks.load_agents", json.dumps(spec)],
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if poller.stdout.readline().strip() != "ready":
            raise RuntimeError(f"agents do not answer Predict: {poller.stderr.read()[-1500:]}")
        c.promote(model, v.version, "production", reason="bench")
        returned = time.time()
    out, err = poller.communicate(timeout=180)
    doc = json.loads(out.strip().splitlines()[-1])
    if len(doc["first"]) != len(agents):
        raise RuntimeError(f"{len(agents) - len(doc['first'])} agents never served {want}")
    return max(doc["first"].values()) - returned


def run(env, cfg) -> list[Row]:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return [
            not_measurable("8", NAME, "promote -> serving at every agent", f"onnx and onnxruntime ({e})"),
            not_measurable("10", NAME, "sidecar overhead", f"onnx and onnxruntime ({e})"),
        ]
    from modelreg import Client

    big_bytes = 2 * MIB if cfg.quick else 25 * MIB
    kinds = {"bench-agent-tiny": 16, "bench-agent-big": big_bytes}
    seed = iter(range(1, 10_000))
    first: dict[str, bytes] = {}
    yolo = None
    if not cfg.quick:
        try:
            yolo = yolo_onnx(env.tmp / "yolo")
        except Exception as e:  # noqa: BLE001 - ultralytics is an optional extra
            log(f"  no YOLOv8n export: {e}")
    with Client(env.ours, actor="bench") as c:
        for model, size in kinds.items():
            first[model] = onnx_model(size, next(seed))
            v = c.register(model, first[model], format="onnx", filename="model.onnx")
            c.promote(model, v.version, "production", reason="bench seed")
        if yolo is not None:
            v = c.register("bench-agent-yolo", yolo, format="onnx", filename="yolov8n.onnx")
            c.promote("bench-agent-yolo", v.version, "production", reason="bench seed")

    # The bound's parts, measured on the same files: download through the registry stream,
    # onnxruntime session creation and the first run.
    bound: dict[str, dict] = {}
    for model, data in first.items():
        path = env.tmp / f"{model}.onnx"
        path.write_bytes(data)
        o = env.floor_call("ort", {"path": str(path), "count": 200})
        d = env.load(
            {
                "op": "download",
                "target": env.ours,
                "name": f"models/{model}/versions/production",
                "concurrency": 1,
                "count": 3,
                "warmup_calls": 1,
            }
        )
        bound[model] = {
            "download_s": d["p50_us"] / 1e6,
            "session_s": o["extra"]["session_s"],
            "warmup_s": o["extra"]["warmup_s"],
        }
        bound[model]["bound_s"] = (
            bound[model]["download_s"] + 2 * bound[model]["session_s"] + bound[model]["warmup_s"] + 0.1
        )

    agents = Agents(env, list(kinds) + (["bench-agent-yolo"] if yolo is not None else []))
    env.cache["agent:tiny"] = (agents, "bench-agent-tiny")  # bench_oip --quick reuses it
    rows: list[Row] = []
    counts = (1,) if cfg.quick else (1, 10)
    rounds = 1 if cfg.quick else cfg.reps
    for n in counts:
        agents.add(n - len(agents.addresses))
        time.sleep(1.0)
        for model, size in kinds.items():
            took = [_switch(env, agents.addresses, model, onnx_model(size, next(seed))) for _ in range(rounds)]
            b = bound[model]
            label = "tiny model" if size < MIB else f"{size / MIB:.0f} MB model"
            log(f"  {n} agents, {label}: {[round(t * 1000) for t in took]} ms (bound {b['bound_s'] * 1000:.0f} ms)")
            rows.append(
                Row(
                    goal="8",
                    bench=NAME,
                    figure=f"promote -> last of {n} agent(s) serving it, {label}",
                    ours=median(took) * 1000,
                    unit="ms",
                    ref=b["bound_s"] * 1000,
                    ref_label=(
                        f"bound: download {b['download_s'] * 1000:.0f} + 2×session {b['session_s'] * 1000:.0f}"
                        f" + warm-up {b['warmup_s'] * 1000:.0f} + 100"
                    ),
                    ratio=ratio(median(took), b["bound_s"]),
                    ratio_of="ours/bound",
                    target=("<=", 1),
                    details={"rounds_ms": [t * 1000 for t in took], "bound": b},
                )
            )
    rows.append(
        not_measurable(
            "8",
            NAME,
            "promote -> serving with 50 agents",
            "a machine with more than 2 cores (50 agent processes with onnxruntime)",
        )
    )

    # Goal 10: Predict through the first agent vs onnxruntime in-process, tiny model.
    tiny = env.tmp / "bench-agent-tiny.onnx"
    one = {"concurrency": 1, "duration": cfg.lat_duration}
    res = alternate(
        cfg.reps,
        {
            "agent_predict": lambda: env.load(
                dict(one, op="predict", target=agents.addresses[0], model="bench-agent-tiny")
            ),
            "in_process": lambda: _summ(
                env.floor_call("ort", {"path": str(tiny), "count": max(200, int(cfg.lat_duration * 3000))})
            ),
        },
    )
    ours, floor = med(res, "agent_predict", "p50_us"), med(res, "in_process", "p50_us")
    rows.append(
        Row(
            goal="10",
            bench=NAME,
            figure="Predict via agent vs onnxruntime in-process p50, tiny model",
            ours=ours,
            unit="µs",
            ref=floor,
            ref_label="in-process session.run",
            ratio=ratio(ours, floor),
            ratio_of="agent/in-process",
            note=f"adds {ours - floor:.0f} µs per request",
        )
    )
    if yolo is None:
        rows.append(
            not_measurable(
                "10",
                NAME,
                "sidecar overhead for YOLOv8n at 640 on CPU (≤ 1.05×)",
                "the full run (skipped in --quick) and ultralytics installed (the ultralytics extra)",
            )
        )
        return rows
    path = env.tmp / "yolov8n.onnx"
    path.write_bytes(yolo)
    spec = {"input": ["images", [1, 3, 640, 640]]}
    window = max(3.0, cfg.lat_duration * 2)
    res = alternate(
        cfg.reps,
        {
            "agent_predict": lambda: env.load(
                dict(
                    spec,
                    op="predict",
                    target=agents.addresses[0],
                    model="bench-agent-yolo",
                    concurrency=1,
                    duration=window,
                    warmup_calls=2,
                )
            ),
            "in_process": lambda: _summ(
                env.floor_call("ort", dict(spec, path=str(path), count=10_000, duration=window))
            ),
        },
    )
    ours, floor = med(res, "agent_predict", "p50_us"), med(res, "in_process", "p50_us")
    rows.append(
        Row(
            goal="10",
            bench=NAME,
            figure="Predict via agent vs onnxruntime in-process p50, YOLOv8n 640 CPU",
            ours=ours / 1000,
            unit="ms",
            ref=floor / 1000,
            ref_label="in-process session.run",
            ratio=ratio(ours, floor),
            ratio_of="agent/in-process",
            target=("<=", 1.05),
            note=f"adds {(ours - floor) / 1000:.1f} ms per request (4.9 MB in, 2.8 MB out)",
        )
    )
    return rows


def _summ(raw: dict) -> dict:
    from benchmarks.stats import summarize

    return summarize(raw["latencies"], raw["elapsed_s"], raw["errors"])
