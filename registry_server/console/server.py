"""The console's HTTP listener: uvicorn serving the Starlette app in the registry's own
event loop, beside grpc.aio.

Why not `uvicorn.Server.serve()`: it installs its own SIGINT/SIGTERM handlers over the
registry's and exits the process when it cannot bind. Here the socket is bound first (an
OSError says the address is taken), and start/close are the registry's to call.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn
from starlette.types import ASGIApp

# Seconds open responses (an SSE stream, a download) get to finish when the server stops.
GRACE_S = 1


class ConsoleServer:
    def __init__(self, app: ASGIApp, host: str, port: int):
        self.host = host
        self.port = port
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=GRACE_S,
            server_header=False,
        )
        self._server = uvicorn.Server(self._config)
        self._socket: socket.socket | None = None
        self._ticks: asyncio.Task | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> ConsoleServer:
        """Binds and serves; OSError when the address is taken or invalid."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted connections inherit it: uvicorn writes a response's head and body
            # apart, and Nagle held the body for the client's delayed ACK (40 ms a call).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = self._config
        if not config.loaded:
            config.load()
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=[sock])
        # uvicorn's tick: the Date header and the exit flag, every 0.1 s.
        self._ticks = asyncio.create_task(self._server.main_loop(), name="modelreg-console-ticks")
        return self

    async def close(self) -> None:
        """Stops listening, lets open responses finish for GRACE_S, then closes them."""
        if self._ticks is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticks
        self._ticks = None
        await self._server.shutdown(sockets=[self._socket] if self._socket else None)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
