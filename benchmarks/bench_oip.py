"""Issue 15: the Open Inference Protocol on the agent costs nothing beside our own Predict.

One real `modelreg agent` process serves a tiny ONNX graph (y = x * w, x float32 [1, 4]) and,
in the full run, YOLOv8n exported to ONNX at 640 (`YOLO("yolov8n.yaml")`, random weights,
YOLO_OFFLINE=1, its ultralytics metadata removed as in bench_agent: input `images` float32
[1, 3, 640, 640], 4.9 MB in, 2.8 MB out). One load-generator process measures, in ABBA turns
on one client, Predict (modelreg.v1.InferenceService) and ModelInfer with raw_input_contents
(inference.GRPCInferenceService), both through our generated stubs: the same routing, lease,
signature check and onnxruntime call behind both, so the difference is the protocol's codec.

Figures: ModelInfer p50 / Predict p50 on YOLOv8n (target <= 1.02), and on the tiny model the
microseconds ModelInfer adds (or saves) per request.
"""

from __future__ import annotations

import time

from benchmarks.bench_agent import Agents, onnx_model, yolo_onnx
from benchmarks.common import ratio
from benchmarks.env import log
from benchmarks.report import Row, not_measurable
from benchmarks.stats import median

NAME = "oip"
GOALS = "15"
TINY = "bench-oip-tiny"
YOLO = "bench-oip-yolo"
YOLO_INPUT = ["images", [1, 3, 640, 640]]


def _wait_serving(address: str, models: list[str], timeout: float = 180) -> None:
    import grpc

    from modelreg.oip import grpc_predict_v2_pb2 as pb
    from modelreg.oip import grpc_predict_v2_pb2_grpc as pb_grpc

    deadline = time.time() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.time() < deadline:
            try:
                if all(stub.ModelReady(pb.ModelReadyRequest(name=m), timeout=2).ready for m in models):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"agent {address} did not load {models} within {timeout:.0f}s")


def _pair(env, address: str, model: str, turn: dict, rounds: int, **spec) -> dict[str, list[dict]]:
    """Predict and ModelInfer in ABBA turns from one process, `rounds` times (the order flips
    each round); the summaries of each side."""
    out: dict[str, list[dict]] = {"predict": [], "oip_infer": []}
    for r in range(rounds):
        order = ["predict", "oip_infer"] if r % 2 == 0 else ["oip_infer", "predict"]
        sides = [{"op": op} for op in order]
        got = env.load_interleaved(
            dict(spec, **turn, op=order[0], target=address, model=model, concurrency=1, warmup_calls=3, sides=sides)
        )
        for op, summary in zip(order, got, strict=True):
            if summary["errors"]:
                raise RuntimeError(f"{op} on {model}: {summary['errors']} errors, e.g. {summary['error_samples']}")
            out[op].append(summary)
    return out


def _no_yolo() -> Row:
    return not_measurable(
        "15",
        NAME,
        "ModelInfer vs Predict p50, YOLOv8n 640 (<= 1.02×)",
        "the full run (skipped in --quick) and ultralytics installed (the ultralytics extra)",
    )


def _tiny_row(tiny: dict[str, list[dict]]) -> Row:
    predict = median([s["p50_us"] for s in tiny["predict"]])
    infer = median([s["p50_us"] for s in tiny["oip_infer"]])
    log(f"  tiny: Predict p50 {predict:.0f} µs, ModelInfer p50 {infer:.0f} µs")
    return Row(
        goal="15",
        bench=NAME,
        figure="ModelInfer (raw contents) vs Predict p50 via agent, tiny model",
        ours=infer,
        unit="µs",
        ref=predict,
        ref_label="our Predict, same agent, same run",
        ratio=ratio(infer, predict),
        ratio_of="ModelInfer/Predict",
        note=f"ModelInfer adds {infer - predict:+.0f} µs per request",
        details={
            "predict_p50_us": [s["p50_us"] for s in tiny["predict"]],
            "oip_p50_us": [s["p50_us"] for s in tiny["oip_infer"]],
        },
    )


def run(env, cfg) -> list[Row]:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return [not_measurable("15", NAME, "ModelInfer vs Predict", f"onnx and onnxruntime ({e})")]
    from modelreg import Client

    rounds = 1 if cfg.quick else max(cfg.reps, 4)
    turn = {"slice_s": 0.1, "slices": max(2, round(cfg.lat_duration / 0.1))}
    shared = env.cache.get("agent:tiny")
    if cfg.quick and shared is not None and shared[0].addresses:
        # --quick (make test's smoke run): the tiny row on bench_agent's agent, no second agent to start
        agents, model = shared
        _wait_serving(agents.addresses[0], [model])
        return [_tiny_row(_pair(env, agents.addresses[0], model, turn, rounds)), _no_yolo()]
    yolo = None
    if not cfg.quick:
        try:
            yolo = yolo_onnx(env.tmp / "oip-yolo")
        except Exception as e:  # noqa: BLE001 - ultralytics is an optional extra
            log(f"  no YOLOv8n export: {e}")
    with Client(env.ours, actor="bench") as c:
        v = c.register(TINY, onnx_model(16, 7), format="onnx", filename="model.onnx")
        c.promote(TINY, v.version, "production", reason="bench seed")
        if yolo is not None:
            v = c.register(YOLO, yolo, format="onnx", filename="yolov8n.onnx")
            c.promote(YOLO, v.version, "production", reason="bench seed")
    models = [TINY] + ([YOLO] if yolo is not None else [])
    agents = Agents(env, models)
    agents.add(1)
    address = agents.addresses[0]
    _wait_serving(address, models)

    rows = [_tiny_row(_pair(env, address, TINY, turn, rounds))]
    if yolo is None:
        return [*rows, _no_yolo()]
    big = _pair(env, address, YOLO, {"slice_calls": 5, "slices": 6 if cfg.quick else 10}, rounds, input=YOLO_INPUT)
    predict = median([s["p50_us"] for s in big["predict"]])
    infer = median([s["p50_us"] for s in big["oip_infer"]])
    log(f"  YOLOv8n: Predict p50 {predict / 1000:.1f} ms, ModelInfer p50 {infer / 1000:.1f} ms")
    rows.append(
        Row(
            goal="15",
            bench=NAME,
            figure="ModelInfer (raw contents) vs Predict p50 via agent, YOLOv8n 640 CPU",
            ours=infer / 1000,
            unit="ms",
            ref=predict / 1000,
            ref_label="our Predict, same agent, same run",
            ratio=ratio(infer, predict),
            ratio_of="ModelInfer/Predict",
            target=("<=", 1.02),
            note=f"{(infer - predict) / 1000:+.2f} ms per request (4.9 MB in, 2.8 MB out)",
            details={
                "predict_p50_us": [s["p50_us"] for s in big["predict"]],
                "oip_p50_us": [s["p50_us"] for s in big["oip_infer"]],
            },
        )
    )
    return rows
