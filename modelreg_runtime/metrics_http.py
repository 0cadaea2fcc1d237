"""The /metrics endpoint both processes serve: a tiny HTTP/1.0 server in the process's own
event loop, around a `render() -> bytes` the caller supplies (prometheus_client's
`generate_latest` over the process's registry).

Why in the event loop and not `prometheus_client.start_http_server` on a thread: the
collectors read loop-owned state (the asyncpg pool's counts, the event hub's streams, the
read cache's counters) and reading it from another thread would race with the loop; and a
thread does not unblock anything, since rendering holds the GIL either way. Rendering takes
a few milliseconds (~4 ms for a registry's ~30 KB on a 2-core machine), once per scrape
(every 15 s by default): that is the whole cost the loop pays. Standard library only, like the rest of this package.

`parse_listen("host:port")` reads `--metrics-listen` / MODELREG_METRICS_ADDRESS: `off` or
empty disables, a bare port means 127.0.0.1:port, port 0 picks a free one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OFF = ("", "off", "none", "false", "no")


class MetricsAddressError(ValueError):
    """A metrics address that is not host:port; the message says what to set."""


def parse_listen(
    value: str | None, flag: str = "--metrics-listen", example: str = "127.0.0.1:9464"
) -> tuple[str, int] | None:
    """`host:port` (or a bare port, on 127.0.0.1) -> (host, port); None when disabled."""
    raw = (value or "").strip()
    if raw.lower() in OFF:
        return None
    host, sep, port = raw.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", raw
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise MetricsAddressError(
            f"{flag} {raw!r} is not host:port; set it to an address like {example}, or 'off' to disable it"
        )
    return host, int(port)


class MetricsServer:
    """GET /metrics (or /) returns `render()`; anything else 404. `start()` binds, `port`
    is the bound port (useful with port 0), `close()` stops listening."""

    def __init__(self, render: Callable[[], bytes], host: str, port: int):
        self.render = render
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def start(self) -> MetricsServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.split("?")[0] in ("/metrics", "/"):
                body, status, ctype = self.render(), "200 OK", CONTENT_TYPE
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
