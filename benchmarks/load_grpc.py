"""Our load generator: grpc.aio clients against a registry (or the bare floor server).

Run as a subprocess by the harness: `python -m benchmarks.load_grpc SPEC_JSON`. It prints
one JSON object: raw latencies (seconds), errors, elapsed, plus op-specific extras.

Spec keys: op, target, concurrency, and either duration (seconds, measured from
start_at, an epoch time shared by sibling processes) or count (calls per worker); token
(optional) is sent as `authorization: Bearer <token>` on every registry call.
Ops:
  get       GetModelVersion on `names` (cycled)
  promote   PromoteModelVersion to production, alternating over `names` (use concurrency 1)
  register  RegisterModelVersion of `size` fresh random bytes into `model`
  download  DownloadArtifact of `name` with `chunk_size`; reports bytes moved
  empty     the floor server's empty unary call
  lookup    the floor server's asyncpg primary-key lookup
  predict   a serving agent's Predict on `model` with zeros of float32 `input` = [name, shape]
            (default ["x", [1, 4]])
  oip_infer the same through the Open Inference Protocol: ModelInfer with raw_input_contents

With `sides` (a list of spec overrides), the targets are measured in turns from this one
process (`interleaved`): see there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time

import grpc

from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res

MAX_MESSAGE = 16 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # One HTTP/2 connection per simulated client, as separate clients would have.
    ("grpc.use_local_subchannel_pool", 1),
]
METADATA = (("x-modelreg-actor", "bench"),)


def _identity(b: bytes) -> bytes:
    return b


class Worker:
    def __init__(self, spec: dict, index: int):
        self.spec = spec
        self.index = index
        self.channel = grpc.aio.insecure_channel(spec["target"], options=CHANNEL_OPTIONS)
        self.stub = rs_grpc.RegistryServiceStub(self.channel)
        self.empty = self.channel.unary_unary(
            "/bench.Floor/Empty", request_serializer=_identity, response_deserializer=_identity
        )
        self.lookup = self.channel.unary_unary(
            "/bench.Floor/Lookup", request_serializer=_identity, response_deserializer=_identity
        )
        self.sink = self.channel.stream_unary(
            "/bench.Floor/Sink", request_serializer=_identity, response_deserializer=_identity
        )
        self.metadata = METADATA
        if spec.get("token"):
            self.metadata = (*METADATA, ("authorization", f"Bearer {spec['token']}"))
        self.i = 0
        self.extra: dict = {}
        if spec["op"] == "predict":
            from modelreg.v1 import inference_service_pb2 as inf
            from modelreg.v1 import inference_service_pb2_grpc as inf_grpc

            self.infer = inf_grpc.InferenceServiceStub(self.channel)
            name, shape = spec.get("input", ["x", [1, 4]])
            size = 4
            for d in shape:
                size *= d
            self.predict_req = inf.PredictRequest(
                model=spec["model"],
                inputs=[inf.Tensor(name=name, dtype=inf.DATA_TYPE_FLOAT32, shape=shape, data=bytes(size))],
            )

        if spec["op"] == "oip_infer":
            from modelreg.oip import grpc_predict_v2_pb2 as oip
            from modelreg.oip import grpc_predict_v2_pb2_grpc as oip_grpc

            self.oip = oip_grpc.GRPCInferenceServiceStub(self.channel)
            name, shape = spec.get("input", ["x", [1, 4]])
            size = 4
            for d in shape:
                size *= d
            self.oip_req = oip.ModelInferRequest(
                model_name=spec["model"],
                inputs=[oip.ModelInferRequest.InferInputTensor(name=name, datatype="FP32", shape=shape)],
                raw_input_contents=[bytes(size)],
            )

    async def call(self) -> None:
        op = self.spec["op"]
        self.i += 1
        if op == "get":
            names = self.spec["names"]
            await self.stub.GetModelVersion(
                rs.GetModelVersionRequest(name=names[(self.index + self.i) % len(names)]), metadata=self.metadata
            )
        elif op == "promote":
            names = self.spec["names"]
            await self.stub.PromoteModelVersion(
                rs.PromoteModelVersionRequest(
                    name=names[self.i % len(names)], stage=res.STAGE_PRODUCTION, reason="bench"
                ),
                metadata=self.metadata,
            )
        elif op == "register":
            await self._register()
        elif op == "download":
            await self._download()
        elif op == "empty":
            await self.empty(b"")
        elif op == "predict":
            resp = await self.infer.Predict(self.predict_req)
            if self.spec.get("count_versions"):
                key = f"served {resp.model_version}"
                self.extra[key] = self.extra.get(key, 0) + 1
        elif op == "oip_infer":
            await self.oip.ModelInfer(self.oip_req)
        elif op == "lookup":
            await self.lookup(self.spec.get("key", "").encode())
        elif op == "sink":
            await self._sink()
        else:
            raise SystemExit(f"unknown op {op!r}")

    def _registration(self) -> tuple[rs.RegisterModelVersionRequest, rs.RegisterModelVersionRequest]:
        """A registration's two messages: the header, then `size` fresh random bytes."""
        data = os.urandom(self.spec.get("size", 1024))
        header = rs.RegisterModelVersionRequest(
            header=rs.RegisterModelVersionHeader(
                parent=f"models/{self.spec.get('model', 'floor')}",
                create_model=True,
                format=res.ARTIFACT_FORMAT_OTHER,  # random bytes: not ONNX, which the registry refuses
                filename="model.bin",
                sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
            )
        )
        return header, rs.RegisterModelVersionRequest(chunk=data)

    async def _register(self) -> None:
        messages = self._registration()

        async def requests():
            for m in messages:
                yield m

        resp = await self.stub.RegisterModelVersion(requests(), metadata=self.metadata)
        self.extra.setdefault("versions", []).append(resp.model_version.version)

    async def _sink(self) -> None:
        """The shape of a registration with no work behind it (the floor's Sink)."""
        messages = [m.SerializeToString() for m in self._registration()]

        async def requests():
            for m in messages:
                yield m

        await self.sink(requests())

    async def _download(self) -> None:
        moved = 0
        req = rs.DownloadArtifactRequest(name=self.spec["name"], chunk_size=self.spec.get("chunk_size", 1 << 20))
        async for msg in self.stub.DownloadArtifact(req, metadata=self.metadata):
            if msg.WhichOneof("payload") == "chunk":
                moved += len(msg.chunk)
        self.extra["bytes"] = self.extra.get("bytes", 0) + moved


async def _run_worker(w: Worker, spec: dict, deadline: float | None, latencies: list, errors: list) -> None:
    count = spec.get("count")
    done = 0
    while True:
        if count is not None and done >= count:
            return
        if deadline is not None and time.time() >= deadline:
            return
        t0 = time.perf_counter()
        try:
            await w.call()
        except grpc.aio.AioRpcError as e:
            errors.append(f"{e.code().name}: {e.details()}")
            done += 1
            continue
        latencies.append(time.perf_counter() - t0)
        done += 1


async def _connect(spec: dict) -> list[Worker]:
    """`concurrency` workers, connected and warmed up."""
    workers = [Worker(spec, i) for i in range(spec.get("concurrency", 1))]
    for w in workers:
        await w.channel.channel_ready()
    if spec["op"] == "promote":
        # Start with the version that is not in production now, so every call is a real move.
        names = spec["names"]
        model = names[0].split("/versions/")[0]
        current = await workers[0].stub.GetModelVersion(
            rs.GetModelVersionRequest(name=f"{model}/versions/production"), metadata=workers[0].metadata
        )
        now = f"{model}/versions/{current.model_version.version}"
        for w in workers:
            w.i = names.index(now) if now in names else 0
    # Warm-up: connections up, server caches and statement caches primed.
    for _ in range(spec.get("warmup_calls", 3)):
        await asyncio.gather(*(w.call() for w in workers))
    for w in workers:
        w.extra.clear()
    return workers


async def main(spec: dict) -> dict:
    workers = await _connect(spec)
    start_at = spec.get("start_at") or time.time()
    delay = start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    deadline = start_at + spec["duration"] if spec.get("duration") else None
    latencies: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(_run_worker(w, spec, deadline, latencies, errors) for w in workers))
    elapsed = time.perf_counter() - t0
    extra: dict = {}
    for w in workers:
        for k, v in w.extra.items():
            if isinstance(v, list):
                extra.setdefault(k, []).extend(v)
            else:
                extra[k] = extra.get(k, 0) + v
    for w in workers:
        await w.channel.close()
    return {
        "latencies": latencies,
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "elapsed_s": elapsed,
        "extra": extra,
    }


async def interleaved(spec: dict) -> dict:
    """Two (or more) targets measured in turns from one process, so that whatever else the
    machine does at a moment falls on both: `sides` is a list of spec overrides (target,
    token, names, ...), each gets its own `concurrency` workers, connected and warmed up
    first; then `slices` turns per side, in ABBA order (A B B A A B ..., A B C C B A ...), each turn
    `slice_s` seconds or `slice_calls` calls per worker, with only that side's workers
    running. Prints per side: latencies, each turn's [calls, seconds], errors."""
    sides = [dict(spec, **side) for side in spec["sides"]]
    groups = [await _connect(s) for s in sides]
    out = [{"latencies": [], "slices": [], "errors": []} for _ in sides]
    order = [*range(len(sides)), *reversed(range(len(sides)))]
    turn = dict(spec)
    for k in ("duration", "count", "sides"):
        turn.pop(k, None)
    if spec.get("slice_calls"):
        turn["count"] = spec["slice_calls"]
    for i in range(spec["slices"] * len(sides)):
        side = order[i % len(order)]
        deadline = time.time() + spec["slice_s"] if spec.get("slice_s") else None
        before = len(out[side]["latencies"]) + len(out[side]["errors"])
        t0 = time.perf_counter()
        await asyncio.gather(
            *(_run_worker(w, turn, deadline, out[side]["latencies"], out[side]["errors"]) for w in groups[side])
        )
        calls = len(out[side]["latencies"]) + len(out[side]["errors"]) - before
        out[side]["slices"].append([calls, time.perf_counter() - t0])
    for group in groups:
        for w in group:
            await w.channel.close()
    return {
        "sides": [
            {
                "latencies": o["latencies"],
                "slices": o["slices"],
                "errors": len(o["errors"]),
                "error_samples": sorted(set(o["errors"]))[:5],
            }
            for o in out
        ]
    }


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    result = asyncio.run(interleaved(spec) if "sides" in spec else main(spec))
    json.dump(result, sys.stdout)
