"""A real HTTP receiver on loopback for webhook tests: a threaded http.server that records
every request (headers, body, arrival time) and answers what the test says; it can be
taken down and brought back on the same port."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import agent_helpers


@dataclass(frozen=True)
class Received:
    delivery: str
    event_type: str
    timestamp: int
    signature: str
    body: bytes
    at: float
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def payload(self) -> dict:
        return json.loads(self.body)

    @property
    def sequence(self) -> int:
        return int(self.payload["event"]["sequence"])

    def verify(self, secret: str) -> bool:
        mac = hmac.new(secret.encode(), f"{self.delivery}.{self.timestamp}.".encode() + self.body, hashlib.sha256)
        return hmac.compare_digest(self.signature, "v1=" + mac.hexdigest())


# this request -> (status, seconds to wait before answering[, extra response headers])
Answer = Callable[[Received], tuple]


@dataclass
class Receiver:
    answer: Answer = lambda r: (200, 0.0)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                got = Received(
                    delivery=self.headers.get("X-Modelreg-Delivery", ""),
                    event_type=self.headers.get("X-Modelreg-Event", ""),
                    timestamp=int(self.headers.get("X-Modelreg-Timestamp", "0")),
                    signature=self.headers.get("X-Modelreg-Signature", ""),
                    body=body,
                    at=time.monotonic(),
                    headers=dict(self.headers.items()),
                )
                with receiver._lock:
                    receiver.received.append(got)
                status, delay, *extra = receiver.answer(got)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for name, value in (extra[0] if extra else {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the registry gave up waiting (or was killed)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True, name="webhook-receiver").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """agent_helpers.wait_until with this file's positional (timeout, what)."""
    agent_helpers.wait_until(predicate, timeout, what=what)
