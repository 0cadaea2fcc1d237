"""A TCP proxy on 127.0.0.1 that cuts, delays and drops, for the chaos suite and the tests.

It runs an asyncio loop in a background thread. `cut()` aborts one random live connection
(both sides), like a load balancer or a NAT dropping it. `delay` holds every chunk that
many seconds before forwarding it (a slow link; order is kept). `partition()` black-holes
the link: bytes already read are dropped and nothing is forwarded, new connections are
accepted and then hang, like a network partition that neither side notices at once;
`heal()` ends it and aborts every connection that lived through it (their streams are
already broken, as a real partition leaves them). `blackhole_existing()` silently drops
everything on the connections open now while new ones work: a NAT or load balancer that
lost its state, leaving half-open connections that only a timeout on the client notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading


class FaultyProxy:
    """Forwards 127.0.0.1:port to target; faults are switched on and off from any thread."""

    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.0):
        self.target = (target_host, target_port)
        self.delay = delay
        self.partitioned = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="proxy")
        self.thread.start()
        self.pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.dead: set[asyncio.StreamWriter] = set()  # the writers of black-holed connections
        self.cuts = 0
        self.opened = 0  # connections made to the target, ever
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    async def _start(self) -> asyncio.base_events.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.partitioned or writer in self.dead:
                    continue  # black-holed
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        while self.partitioned:  # the SYN "gets through" but nothing else does
            await asyncio.sleep(0.05)
            if cwriter.transport.is_closing():
                return
        try:
            ureader, uwriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.close()
            return
        pair = (cwriter, uwriter)
        self.pairs.append(pair)
        self.opened += 1
        try:
            await asyncio.gather(self._pipe(creader, uwriter), self._pipe(ureader, cwriter))
        finally:
            with contextlib.suppress(ValueError):
                self.pairs.remove(pair)

    def _run(self, fn) -> object:
        async def call() -> object:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def _abort(self, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        for w in pair:
            w.transport.abort()

    def cut(self) -> bool:
        """Aborts one random connection; False when none is open."""

        def cut_one() -> bool:
            if not self.pairs:
                return False
            self._abort(random.choice(self.pairs))
            self.cuts += 1
            return True

        return bool(self._run(cut_one))

    def partition(self) -> None:
        """From now on nothing gets through, in either direction, until `heal()`."""
        self._run(lambda: setattr(self, "partitioned", True))

    def heal(self) -> None:
        """Ends the partition; the connections that lived through it are aborted."""

        def heal_all() -> None:
            self.partitioned = False
            for pair in list(self.pairs):
                self._abort(pair)
                self.cuts += 1

        self._run(heal_all)

    def blackhole_existing(self) -> int:
        """Silently drops all traffic of the connections open now; returns how many."""

        def mark() -> int:
            for pair in self.pairs:
                self.dead.update(pair)
            return len(self.pairs)

        return int(self._run(mark))  # type: ignore[call-overload]

    def live_connections(self) -> int:
        return len(self.pairs)

    def close(self) -> None:
        async def stop() -> None:
            self.partitioned = False
            self.server.close()
            for pair in list(self.pairs):
                self._abort(pair)
            # The handlers end by themselves once their sockets are aborted (cancelling
            # them would make asyncio's stream callback log an error).
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if tasks:
                await asyncio.wait(tasks, timeout=5)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
