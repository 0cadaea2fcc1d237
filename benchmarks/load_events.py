"""Watchers for the event benchmarks: `python -m benchmarks.load_events SPEC_JSON`.

Opens `watchers` WatchEvents streams on one model (all event types), spread over
connections of `per_channel` streams. When every stream has its snapshot it prints
`ready`; from then on it stamps each event with time.time() on arrival. On `stop` (a line
on stdin) it prints JSON: {"received": [[[sequence, arrival], ...] per watcher], ...}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc

from modelreg.v1 import event_service_pb2 as es
from modelreg.v1 import event_service_pb2_grpc as es_grpc


async def main(spec: dict) -> None:
    n, per_channel = spec["watchers"], spec.get("per_channel", 50)
    channels = [
        grpc.aio.insecure_channel(spec["target"], options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range((n + per_channel - 1) // per_channel)
    ]
    stubs = [es_grpc.EventServiceStub(c) for c in channels]
    received: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    errors: list[str] = []
    ready = 0
    all_ready = asyncio.Event()

    async def watch(i: int) -> None:
        nonlocal ready
        req = es.WatchEventsRequest(models=[f"models/{spec['model']}"])
        try:
            async for msg in stubs[i % len(stubs)].WatchEvents(req):
                kind = msg.WhichOneof("payload")
                if kind == "snapshot":
                    ready += 1
                    if ready == n:
                        all_ready.set()
                elif kind == "event":
                    received[i].append((msg.event.sequence, time.time()))
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                errors.append(f"{e.code().name}: {e.details()}")
                all_ready.set()

    tasks = [asyncio.create_task(watch(i)) for i in range(n)]
    await asyncio.wait_for(all_ready.wait(), 120)
    if errors:
        print(json.dumps({"received": [], "watchers": n, "errors": errors[:5]}), flush=True)
        return
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in channels:
        await c.close()
    print(json.dumps({"received": received, "watchers": n, "errors": errors[:5]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
