"""Load generators and their ledgers for the chaos suite.

    Registrations   N client threads registering versions, each retried with the SAME request id
                    until acknowledged (what the SDK promises converges to one version)
    Promotions      a thread promoting acknowledged versions to production, retried the same way
    Watchers        SDK watchers in threads recording every event they are given
    InferenceLoad   Predict at a fixed rate against agents (grpc.aio in a thread of its own);
                    every answer is checked against the version that says it served it

A ledger only records what the client saw; `audit.py` compares it with the registry.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from dataclasses import dataclass, field

import grpc
import numpy as np

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}


def scale_model(scale: float, pad_bytes: int = 0, seed: int = 0) -> bytes:
    """An ONNX graph y = x * W[0], x float32 [N, 4]; W[0] is `scale` (it tells versions apart)
    and `pad_bytes` of seeded random rows make the file as big as a test needs."""
    from benchmarks.bench_agent import slice_mul_model

    rows = 1 + max(0, pad_bytes // 16)
    w = np.random.default_rng(seed).random((rows, 4), dtype=np.float32)
    w[0, :] = scale
    return slice_mul_model(w, "chaos")


def unloadable_onnx() -> bytes:
    """A well-formed ONNX model (the registry accepts it) whose one node is an operator no
    runtime knows, so the agent's onnxruntime refuses to load it."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "unloadable", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def code_of(e: BaseException) -> grpc.StatusCode | None:
    code = getattr(e, "code", None)
    if callable(code):
        code = code()
    return code if isinstance(code, grpc.StatusCode) else None


@dataclass
class Op:
    """One logical operation: a request id, its payload digest, and what the server said."""

    request_id: str
    sha256: str
    attempts: int = 0
    acked_version: int | None = None
    errors: list[str] = field(default_factory=list)


class Registrations:
    """`clients` threads registering into `model` until `stop()` (or `per_client` each).
    A failed call is retried with the same request id and bytes for up to `give_up` s."""

    def __init__(
        self,
        address: str,
        model: str,
        *,
        clients: int = 16,
        size: int = 2048,
        per_client: int = 0,
        give_up: float = 120.0,
        seed: int = 0,
    ):
        from modelreg import Client

        self.address, self.model, self.size, self.per_client, self.give_up = address, model, size, per_client, give_up
        self.client = Client(address, actor="chaos", timeout=15)
        self.ops: list[Op] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.first_ok_after: dict[float, float] = {}
        self.acks: list[tuple[float, float]] = []  # (attempt start, acknowledgement), time.monotonic()
        self.seed = seed
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def payload(self, worker: int, n: int) -> bytes:
        rng = np.random.default_rng([self.seed, worker, n])
        return rng.bytes(self.size)

    def start(self) -> Registrations:
        for t in self.threads:
            t.start()
        return self

    def _run(self, worker: int) -> None:
        n = 0
        while not self.stopping.is_set() and (not self.per_client or n < self.per_client):
            data = self.payload(worker, n)
            op = Op(uuid.uuid4().hex, hashlib.sha256(data).hexdigest())
            with self.lock:
                self.ops.append(op)
            self.register(op, data, tags={"worker": str(worker), "n": str(n)})
            n += 1

    def register(self, op: Op, data: bytes, tags: dict[str, str]) -> None:
        deadline = time.monotonic() + self.give_up
        while True:
            op.attempts += 1
            started = time.monotonic()
            try:
                mv = self.client.register(
                    self.model, data, request_id=op.request_id, tags={**tags, "rid": op.request_id}
                )
                op.acked_version = int(mv.name.rsplit("/", 1)[1])
                with self.lock:
                    self.acks.append((started, time.monotonic()))
                return
            except Exception as e:  # noqa: BLE001 - recorded, retried if transient
                op.errors.append(f"{code_of(e)}: {e}"[:200])
                if code_of(e) not in RETRYABLE or time.monotonic() > deadline:
                    return
                time.sleep(0.2)

    def stop(self, timeout: float = 180.0) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)
        self.client.close()

    def recovered_after(self, t: float) -> float | None:
        """Seconds from `t` to the first acknowledgement of an attempt sent after `t`."""
        with self.lock:
            ends = [end for start, end in self.acks if start > t]
        return min(ends) - t if ends else None

    def acked(self) -> list[Op]:
        return [o for o in self.ops if o.acked_version is not None]


class Promotions:
    """Promotes the newest acknowledged version to production every `interval` s, retrying a
    failed promotion of the same version; records every acknowledged promotion."""

    def __init__(self, address: str, model: str, regs: Registrations, interval: float = 0.2):
        from modelreg import Client

        self.client = Client(address, actor="chaos", timeout=15)
        self.model, self.regs, self.interval = model, regs, interval
        self.attempted = 0
        self.acked: list[int] = []
        self.failed: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Promotions:
        self.thread.start()
        return self

    def _run(self) -> None:
        done: set[int] = set()
        while not self.stopping.wait(self.interval):
            candidates = [o.acked_version for o in self.regs.acked() if o.acked_version not in done]
            if not candidates:
                continue
            v = max(c for c in candidates if c is not None)
            self.attempted += 1
            for _ in range(50):
                try:
                    self.client.promote(self.model, v, "production", reason="chaos")
                    self.acked.append(v)
                    break
                except Exception as e:  # noqa: BLE001 - retried if transient
                    if code_of(e) not in RETRYABLE or self.stopping.is_set():
                        self.failed.append(f"v{v}: {code_of(e)}: {e}"[:200])
                        break
                    time.sleep(0.2)
            done.add(v)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(60)
        self.client.close()


class Watchers:
    """`n` SDK watchers (one channel each, to `addresses[i % len]`) recording event sequences."""

    def __init__(self, addresses: list[str] | str, models: list[str], n: int = 1):
        from modelreg import Client

        addresses = [addresses] if isinstance(addresses, str) else addresses
        self.clients = [Client(addresses[i % len(addresses)], actor="chaos-watch") for i in range(n)]
        self.watchers = [c.watch(models, snapshot=True) for c in self.clients]
        self.seen: list[list[int]] = [[] for _ in range(n)]
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, i: int) -> None:
        try:
            for msg in self.watchers[i]:
                if msg.WhichOneof("payload") == "event":
                    self.seen[i].append(msg.event.sequence)
        except Exception as e:  # noqa: BLE001 - reported by the audit
            self.errors.append(repr(e)[:200])

    def reached(self, sequence: int) -> bool:
        return all((w.last_sequence or 0) >= sequence for w in self.watchers)

    def close(self) -> None:
        for w in self.watchers:
            w.close()
        for t in self.threads:
            t.join(10)
        for c in self.clients:
            c.close()


class InferenceLoad:
    """Predict at `rate` requests/s spread over `targets` (agent addresses) from an asyncio
    loop in its own thread. A request counts as failed if it errors, or if its output is not
    x * scale of the version that says it served it (`scales`: version name -> scale)."""

    def __init__(
        self,
        targets: list[str],
        model: str,
        rate: float,
        scales: dict[str, float],
        concurrency: int = 64,
        timeout: float = 5.0,
    ):
        self.targets, self.model, self.rate, self.scales = targets, model, rate, scales
        self.concurrency, self.timeout = concurrency, timeout
        self.ok = 0
        self.failed = 0
        self.wrong = 0
        self.samples: list[str] = []
        self.versions: dict[str, int] = {}
        self.started = self.ended = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> InferenceLoad:
        self.thread.start()
        return self

    async def _main(self) -> None:
        from modelreg.v1 import inference_service_pb2 as inf
        from modelreg.v1 import inference_service_pb2_grpc as inf_grpc

        x = np.full((1, 4), 1.5, np.float32)
        req = inf.PredictRequest(
            model=f"models/{self.model}",
            inputs=[inf.Tensor(name="x", dtype=inf.DATA_TYPE_FLOAT32, shape=[1, 4], data=x.tobytes())],
        )
        channels = [grpc.aio.insecure_channel(t) for t in self.targets]
        stubs = [inf_grpc.InferenceServiceStub(c) for c in channels]
        sem = asyncio.Semaphore(self.concurrency)
        pending: set[asyncio.Task] = set()

        async def one(i: int) -> None:
            try:
                r = await stubs[i % len(stubs)].Predict(req, timeout=self.timeout)
                y = np.frombuffer(r.outputs[0].data, np.float32)
                self.versions[r.model_version] = self.versions.get(r.model_version, 0) + 1
                want = self.scales.get(r.model_version)
                if want is None or not np.allclose(y, x.ravel() * want):
                    self.wrong += 1
                    self.samples.append(f"{r.model_version} answered {y.tolist()}")
                else:
                    self.ok += 1
            except grpc.aio.AioRpcError as e:
                self.failed += 1
                if len(self.samples) < 20:
                    self.samples.append(f"{e.code().name}: {e.details()}"[:200])
            finally:
                sem.release()

        self.started = time.monotonic()
        i = 0
        while not self.stopping.is_set():
            due = self.started + i / self.rate
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            await sem.acquire()
            t = asyncio.create_task(one(i))
            pending.add(t)
            t.add_done_callback(pending.discard)
            i += 1
        if pending:
            await asyncio.wait(pending, timeout=self.timeout + 5)
        self.ended = time.monotonic()
        for c in channels:
            await c.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)

    @property
    def sent(self) -> int:
        return self.ok + self.failed + self.wrong

    @property
    def achieved_rate(self) -> float:
        return self.sent / max(1e-9, (self.ended or time.monotonic()) - self.started)
