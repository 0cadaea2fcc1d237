"""Runs in the tritonclient venv (benchmarks.env.ensure_triton_venv), not the project's: the
stock Open Inference Protocol client against a modelreg agent. Imports nothing of the project.

    python oip_triton_client.py ADDRESS STEPS.json   # prints one JSON result per step, as a list

Steps: {"op": "server"} | {"op": "model_metadata", "model", "version"} | {"op": "model_ready", ...}
| {"op": "infer", "model", "version", "inputs": [{"name", "datatype", "npy"}], "outputs": [...],
"key", "save"} | {"op": "split", "model", "n", "seed", "inputs", "repeat"} | {"op": "fields"}.
An error is {"error": {"status": "StatusCode.X", "message": "..."}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException


def _inputs(specs: list[dict]) -> list:
    out = []
    for s in specs:
        a = np.load(s["npy"])
        i = tc.InferInput(s["name"], list(a.shape), s.get("datatype") or tc.np_to_triton_dtype(a.dtype))
        i.set_data_from_numpy(a)
        out.append(i)
    return out


def _infer(c, step: dict, inputs=None, key: str | None = None):
    params = {"routing_key": key} if key else None
    return c.infer(
        step["model"],
        inputs if inputs is not None else _inputs(step["inputs"]),
        model_version=step.get("version", ""),
        outputs=[tc.InferRequestedOutput(n) for n in step.get("outputs", [])] or None,
        parameters=params,
    )


def run(c, step: dict) -> dict:
    op = step["op"]
    if op == "server":
        meta = c.get_server_metadata(as_json=True)
        return {"live": c.is_server_live(), "ready": c.is_server_ready(), "metadata": meta}
    if op == "model_ready":
        return {"ready": c.is_model_ready(step["model"], step.get("version", ""))}
    if op == "model_metadata":
        return c.get_model_metadata(step["model"], step.get("version", ""), as_json=True)
    if op == "infer":
        r = _infer(c, step, key=step.get("key"))
        resp = r.get_response()
        saved = {}
        for o in resp.outputs:
            path = Path(step["save"]) / f"{o.name}.npy"
            np.save(path, r.as_numpy(o.name))
            saved[o.name] = {"npy": str(path), "datatype": o.datatype, "shape": list(o.shape)}
        return {
            "model_name": resp.model_name,
            "model_version": resp.model_version,
            "outputs": saved,
            "raw": len(resp.raw_output_contents),
        }
    if op == "split":  # n requests, each with a fresh routing key from a seeded RNG
        rng = np.random.default_rng(step["seed"])
        keys = [f"user-{k}" for k in rng.integers(0, 2**62, step["n"])]
        inputs = _inputs(step["inputs"])
        seen = {k: _infer(c, step, inputs, k).get_response().model_version for k in keys}
        counts: dict[str, int] = {}
        for v in seen.values():
            counts[v] = counts.get(v, 0) + 1
        again = keys[: step["repeat"]]
        switched = sum(_infer(c, step, inputs, k).get_response().model_version != seen[k] for k in again)
        return {"counts": counts, "switched": switched}
    if op == "fields":  # tritonclient's own descriptors: message -> {field: number}
        from tritonclient.grpc import service_pb2

        def fields(d) -> dict:
            out = {d.full_name: {f.name: f.number for f in d.fields}}
            for n in d.nested_types:
                out.update(fields(n))
            return out

        result: dict = {}
        for m in service_pb2.DESCRIPTOR.message_types_by_name.values():
            result.update(fields(m))
        methods = {
            m.name: [m.input_type.full_name, m.output_type.full_name]
            for m in service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
        }
        return {"messages": result, "methods": methods}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    address, steps = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    results = []
    with tc.InferenceServerClient(address) as c:
        for step in steps:
            try:
                results.append(run(c, step))
            except InferenceServerException as e:
                results.append({"error": {"status": str(e.status()), "message": e.message()}})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
