"""The HTTP side of a delivery: where it may go, and one POST with hard limits.

- Destinations: http(s) only, no redirects followed (a redirect could point anywhere), and
  unless `allow_private`, a host that resolves to a loopback, private, link-local,
  multicast or reserved address is refused, at creation and again before every attempt
  (so a name re-pointed at an internal address later is refused too).
- Time: 5 s to connect, 10 s for the whole exchange (asyncio.timeout over it all, since
  httpx's timeouts are per read).
- Memory: the response body is streamed and at most `BODY_CAP` bytes of it are read; the
  connection is then closed. Only the status, `Retry-After` and that prefix are used.
- The environment's proxy settings are ignored (trust_env=False): deliveries go where the
  checked address is.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

import httpx

from registry_server.domain.webhooks import parse_retry_after, refuse_private, validate_url
from registry_server.errors import InvalidArgument

CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 10.0
BODY_CAP = 64 * 1024
USER_AGENT = "modelreg-webhooks/1"


@dataclass(frozen=True)
class Response:
    """What one attempt got: `status` None when no response came. `permanent` marks a
    refusal to send at all (a destination no longer allowed)."""

    status: int | None
    error: str = ""
    retry_after: float | None = None
    permanent: bool = False


class Sender:
    def __init__(
        self,
        allow_private: bool,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        total_timeout: float = TOTAL_TIMEOUT,
        body_cap: int = BODY_CAP,
    ):
        # httpx logs every request's URL at INFO; a webhook URL may carry the receiver's token.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.allow_private = allow_private
        self.total_timeout = total_timeout
        self.body_cap = body_cap
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(total_timeout, connect=connect_timeout),
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def check_destination(self, url: str) -> None:
        """Raises InvalidArgument for a URL that is not http(s), or (unless private
        destinations are allowed) whose host does not resolve or resolves to a non-public
        address."""
        _, host, port = validate_url(url)
        if self.allow_private:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise InvalidArgument(f"webhook host {host!r} does not resolve ({e}); check the URL") from None
        refuse_private(host, [str(info[4][0]) for info in infos])

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        try:
            await self.check_destination(url)
        except InvalidArgument as e:
            permanent = "does not resolve" not in e.message  # DNS may come back; a private address stays refused
            return Response(None, e.message, permanent=permanent)
        try:
            async with asyncio.timeout(self.total_timeout):
                async with self.client.stream("POST", url, content=body, headers=headers) as r:
                    read = 0
                    async for chunk in r.aiter_raw():
                        read += len(chunk)
                        if read >= self.body_cap:
                            break  # the rest is not read; closing the stream drops the connection
                    error = "" if 200 <= r.status_code < 300 else f"HTTP {r.status_code} {r.reason_phrase}".strip()
                    if 300 <= r.status_code < 400:
                        error += " (redirects are not followed; point the webhook at the final URL)"
                    return Response(r.status_code, error, parse_retry_after(r.headers.get("retry-after")))
        except TimeoutError:
            return Response(None, f"no complete response within {self.total_timeout:g}s")
        except httpx.TimeoutException as e:
            return Response(None, f"timed out: {type(e).__name__}")
        except httpx.HTTPError as e:
            return Response(None, f"{type(e).__name__}: {e}"[:500])
