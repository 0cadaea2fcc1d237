"""Pollers for the promotion -> serving benchmark: `python -m benchmarks.load_agents SPEC`.

Calls Predict on every agent in `targets` every `interval` seconds. Prints `ready` once
every agent answers; then records, per agent, the first time (time.time()) its answer
came from `want` (a version name), and prints JSON {"first": {target: time}} when all
have switched or `timeout` passes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc

from modelreg.v1 import inference_service_pb2 as inf
from modelreg.v1 import inference_service_pb2_grpc as inf_grpc


async def main(spec: dict) -> None:
    req = inf.PredictRequest(
        model=spec["model"], inputs=[inf.Tensor(name="x", dtype=inf.DATA_TYPE_FLOAT32, shape=[1, 4], data=bytes(16))]
    )
    channels = {t: grpc.aio.insecure_channel(t) for t in spec["targets"]}
    stubs = {t: inf_grpc.InferenceServiceStub(c) for t, c in channels.items()}
    for stub in stubs.values():
        deadline = time.time() + 120
        while True:
            try:
                await stub.Predict(req, timeout=5)
                break
            except grpc.aio.AioRpcError:
                if time.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
    print("ready", flush=True)
    first: dict[str, float] = {}
    failures = 0
    stop_at = time.time() + spec.get("timeout", 120)

    async def poll(t: str) -> None:
        nonlocal failures
        while time.time() < stop_at:
            try:
                resp = await stubs[t].Predict(req, timeout=5)
                if resp.model_version == spec["want"]:
                    first[t] = time.time()
                    return
            except grpc.aio.AioRpcError:
                failures += 1
            await asyncio.sleep(spec.get("interval", 0.005))

    await asyncio.gather(*(poll(t) for t in stubs))
    for c in channels.values():
        await c.close()
    print(json.dumps({"first": first, "failures": failures}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
