"""The node's own HTTP server (``/metrics``, the dashboard's pages): HTTP/1.1 in the node's event
loop, one request per connection, with everything a client can make it hold bounded.

Anyone who reaches the port talks to it before any authentication, so :class:`HttpLimits` caps
what one connection and all of them together can hold:

- ``max_connections`` (64) open at once. At the cap a new connection takes the place of the
  oldest one whose request has not fully arrived (a stalled client loses to a fresh one, so a
  scrape gets through a flood of idle connections); when every open connection is being
  answered, the new one gets ``503`` and is closed.
- ``max_header_bytes`` (16 KiB) of request line and headers (at most ``max_header_lines``,
  100): more is answered ``431`` and the connection closed.
- ``max_request_bytes`` (64 KiB) of request in all, body included: a longer ``Content-Length``
  is answered ``413`` before the body is read; a chunked body is refused with ``411``.
- ``timeout`` (10 s) for a connection's whole life: its request arriving and its answer being
  taken. Past it the connection is dropped.

So all connections together hold at most ``max_connections * max_request_bytes`` of request
(4 MiB by default), and a connection's buffer, timer and answer are gone once it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pybroadway._throttle import Throttle
from pybroadway.errors import ArgumentError

__all__ = ["HttpLimits", "HttpServer", "Request", "Response"]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


@dataclass(frozen=True)
class HttpLimits:
    """What an :class:`HttpServer` lets its clients make it hold (see the module's text)."""

    max_connections: int = 64
    max_header_bytes: int = 16 * 1024
    max_header_lines: int = 100
    max_request_bytes: int = 64 * 1024
    timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_header_bytes", "max_header_lines",
                     "max_request_bytes", "timeout"):
            if not getattr(self, name) > 0:
                raise ArgumentError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_request_bytes < self.max_header_bytes:
            raise ArgumentError("max_request_bytes must be at least max_header_bytes")


@dataclass(frozen=True)
class Request:
    """One request: ``headers`` by lower-case name (the last of repeated ones)."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]


@dataclass(frozen=True)
class Response:
    """What a handler answers; the server adds the status line and the framing headers."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[Request], Response]
"""Answers a request; runs in the event loop, so it may read the node's state without locks."""


class _Refused(Exception):
    """A request that is answered with ``response`` without reaching the handler."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.response = Response(status, f"{why}\n".encode())


class HttpServer:
    """Serves ``handler`` on a listening socket within :class:`HttpLimits`; ``name`` says
    whose server it is in log lines. :meth:`start` listens, :meth:`stop` closes the socket
    and every connection."""

    def __init__(self, handler: Handler, limits: HttpLimits | None = None, *,
                 logger: logging.Logger | None = None, name: str = "http") -> None:
        self.handler = handler
        self.limits = limits or HttpLimits()
        self.name = name
        self.host = ""
        self.port = 0
        self.logger = logger or logging.getLogger("pybroadway.http")
        self._server: asyncio.Server | None = None
        self._open: set[_Connection] = set()
        self._waiting: dict[_Connection, None] = {}  # request not in yet, oldest first
        self._refusals = Throttle(self.logger, logging.WARNING, f"{name}: refused connections")
        self._bad = Throttle(self.logger, logging.INFO, f"{name}: bad requests")
        self._failed = Throttle(self.logger, logging.ERROR, f"{name}: failed answers")

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._open)

    @property
    def buffered(self) -> int:
        """Bytes of requests held now, over all connections."""
        return sum(len(connection.buffer) for connection in self._open)

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host``:``port`` (0: any free port; :attr:`port` tells which)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        """Stop listening and drop every connection (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._open):
            connection.drop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), self.limits.timeout)

    def _admit(self, connection: _Connection) -> bool:
        """Whether ``connection`` may stay: at the cap it displaces the oldest one still
        waiting for its request, or is refused when none is."""
        if len(self._open) >= self.limits.max_connections:
            oldest = next(iter(self._waiting), None)
            if oldest is None:
                self._refusals.log("%s: %d connections are being answered, refused %s",
                                   self.name, len(self._open), connection.peer)
                return False
            self._refusals.log("%s: %d connections open, dropped the oldest waiting for its "
                               "request (%s)", self.name, len(self._open), oldest.peer)
            oldest.drop()
        self._open.add(connection)
        self._waiting[connection] = None
        return True

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        self._waiting.pop(connection, None)

    def _answer(self, connection: _Connection, request: Request) -> Response:
        self._waiting.pop(connection, None)
        try:
            return self.handler(request)
        except Exception as exc:  # a bug of the handler's, which any client may repeat
            self._failed.log("%s: %s %r failed: %s: %s", self.name, request.method,
                             request.target[:200], type(exc).__name__, exc)
            return Response(500, b"internal error\n")


class _Connection(asyncio.Protocol):
    """One client: its request buffer, its deadline, its transport; all dropped on close."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.buffer = bytearray()
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self._head: tuple[str, str, dict[str, str], int, int] | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if not self.server._admit(self):
            self._reply(Response(503, b"too many connections\n"), head=False)
            return
        self._deadline = asyncio.get_running_loop().call_later(self.limits.timeout, self.drop)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            request = self._take(data)
        except _Refused as refused:
            self.server._bad.log("%s: %s from %s", self.server.name, refused, self.peer)
            self.server._waiting.pop(self, None)
            self._reply(refused.response, head=False)
            return
        if request is not None:
            response = self.server._answer(self, request)
            self._reply(response, head=request.method == "HEAD")

    def eof_received(self) -> bool:
        return False  # a half-closed client gets no answer: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._forget(self)
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self.buffer = bytearray()
        self.transport = None

    def drop(self) -> None:
        """Close now, whatever is unsent (the deadline passed, the server stops, or a
        newer connection takes this one's place)."""
        self.server._forget(self)
        if self.transport is not None:
            self.transport.abort()

    def _take(self, data: bytes) -> Request | None:
        """Buffer ``data``; the request once all of it is in. Holds at most
        ``max_request_bytes``: what comes after the announced body is not kept (one request
        per connection), and a body announced longer is refused before it is read."""
        if self._head is None:
            scanned = max(0, len(self.buffer) - 3)  # the blank line may straddle two reads
            self.buffer += data[:self.limits.max_request_bytes - len(self.buffer)]
            end = self.buffer.find(b"\r\n\r\n", scanned)
            if end < 0 or end + 4 > self.limits.max_header_bytes:
                if len(self.buffer) > self.limits.max_header_bytes:
                    raise _Refused(431, "request headers too large")
                return None
            self._head = self._parse_head(bytes(self.buffer[:end]), end + 4)
        else:
            *_, start, length = self._head
            self.buffer += data[:start + length - len(self.buffer)]
        method, target, headers, start, length = self._head
        if len(self.buffer) < start + length:
            return None
        body = bytes(self.buffer[start:start + length])
        self.buffer = bytearray()
        return Request(method, target, headers, body)

    def _parse_head(self, head: bytes, start: int
                    ) -> tuple[str, str, dict[str, str], int, int]:
        lines = head.decode("latin-1").split("\r\n")
        if len(lines) - 1 > self.limits.max_header_lines:
            raise _Refused(431, "too many request headers")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
            raise _Refused(400, "bad request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _Refused(400, "bad header line")
            headers[name.lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise _Refused(411, "only bodies with a Content-Length are accepted")
        length = headers.get("content-length", "0")
        if not (length.isascii() and length.isdigit() and len(length) < 19):
            raise _Refused(400, "bad Content-Length")
        if start + int(length) > self.limits.max_request_bytes:
            raise _Refused(413, "request body too large")
        return parts[0], parts[1], headers, start, int(length)

    def _reply(self, response: Response, *, head: bool) -> None:
        """Send ``response`` and close once it is taken (the deadline still holds)."""
        assert self.transport is not None
        self.buffer = bytearray()
        framing = (f"HTTP/1.1 {response.status} {_REASONS[response.status]}\r\n"
                   f"Content-Type: {response.content_type}\r\n"
                   f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n")
        self.transport.write(framing.encode("latin-1") + (b"" if head else response.body))
        self.transport.close()

