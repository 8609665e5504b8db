"""The dashboard's HTTP server: aiohttp in the node's event loop, read-only, bounded.

Routes: ``/`` (the page), ``/static/*`` (its script and style, served from the package),
``/metrics`` (:meth:`pybroadway.metrics.Metrics.exposition`, the text ``--metrics-port``
serves), ``/api/snapshot`` (the last snapshot as JSON) and ``/api/stream`` (server-sent
events: a snapshot each tick). Only GET and HEAD are routed.

What a client can make it hold is bounded by :class:`DashboardLimits`: connections (a new
one past the cap is answered 503 and closed), request line and header sizes, stream viewers
(past the cap, 503), and per viewer the events not yet written (``viewer_backlog``) and the
socket's send buffer: a viewer that reads nothing fills them and is dropped, the others go on.
With a ``token``, every route but the static files (the same for everyone) wants it as
``Authorization: Bearer TOKEN`` or ``?token=TOKEN``; the page passes on the one in its URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from pybroadway._throttle import Throttle
from pybroadway.erldist import Node
from pybroadway.errors import ArgumentError
from pybroadway.metrics import Metrics
from pybroadway.pipeline import Pipeline

from ._snapshot import Sampler

__all__ = ["Dashboard", "DashboardLimits"]

logger = logging.getLogger("pybroadway.dashboard")

_STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8"}
_HEADERS = {
    # Nothing from another origin, and the token in a URL goes to no one.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n")


@dataclass(frozen=True)
class DashboardLimits:
    """What the dashboard's clients can make it hold (see the module's text)."""

    max_connections: int = 64
    max_viewers: int = 8
    viewer_backlog: int = 4
    viewer_send_buffer: int = 64 * 1024
    max_header_bytes: int = 8 * 1024
    keepalive: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_viewers", "viewer_backlog",
                     "viewer_send_buffer", "max_header_bytes", "keepalive"):
            if not getattr(self, name) > 0:
                raise ArgumentError(f"{name} must be > 0, got {getattr(self, name)!r}")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Busy(asyncio.Protocol):
    """A connection past the cap: answered 503 and closed, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class _Viewer:
    __slots__ = ("events", "peer", "transport")

    def __init__(self, transport: asyncio.Transport | None, backlog: int) -> None:
        self.transport = transport
        self.events: asyncio.Queue[bytes] = asyncio.Queue(maxsize=backlog)
        peer = transport.get_extra_info("peername") if transport is not None else None
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"


class Dashboard:
    """The dashboard of ``pipeline`` (and ``node``): :meth:`start` samples every
    ``interval`` seconds and listens; :meth:`stop` ends both. ``url`` is the page's address
    (with ``?token=`` when there is one)."""

    def __init__(self, pipeline: Pipeline, node: Node | None = None, *,
                 token: str | None = None, interval: float = 1.0, history: float = 300.0,
                 limits: DashboardLimits | None = None) -> None:
        if not interval > 0:
            raise ArgumentError(f"interval must be > 0, got {interval!r}")
        if token is not None and not token:
            raise ArgumentError("token must not be empty")
        self.pipeline = pipeline
        self.node = node
        self.token = token
        self.interval = interval
        self.limits = limits or DashboardLimits()
        self.sampler = Sampler(pipeline, node, history=max(1, int(history / interval)))
        self.metrics = Metrics(pipeline, node)
        self.viewers: set[_Viewer] = set()
        self.host = ""
        self.port = 0
        self._static = {path.name: (path.read_bytes(), _TYPES[path.suffix])
                        for path in _STATIC.iterdir() if path.suffix in _TYPES}
        self._event = b""
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._dropped = Throttle(logger, logging.WARNING, "dashboard: viewers dropped")
        self._refused = Throttle(logger, logging.WARNING, "dashboard: refused")

    @property
    def url(self) -> str:
        """The page's address (``http://host:port/``, ``?token=`` added when set)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host``:``port`` (0: a free one, see :attr:`port`) and start sampling.
        Raises OSError if the address cannot be bound."""
        app = web.Application(middlewares=[self._guard], client_max_size=1024)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._file)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/api/stream", self._stream)
        limits = self.limits
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               keepalive_timeout=limits.keepalive, handler_cancellation=True,
                               max_line_size=limits.max_header_bytes,
                               max_field_size=limits.max_header_bytes)
        await runner.setup()
        server = runner.server
        assert server is not None

        loop = asyncio.get_running_loop()
        accepting = [0]  # made by accept() and not yet connected: not among the connections

        def accepted() -> None:
            accepting[0] -= 1

        def accept() -> asyncio.Protocol:
            # A burst of connections is accepted before any is connected: count those too.
            if len(server.connections) + accepting[0] >= limits.max_connections:
                self._refused.log("dashboard: %d connections open, refused one more",
                                  len(server.connections) + accepting[0])
                return _Busy()
            accepting[0] += 1
            loop.call_soon(accepted)  # runs once the transport has connected it
            return server()

        try:
            listener = await loop.create_server(accept, host, port)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._listener = runner, listener
        self.host, self.port = listener.sockets[0].getsockname()[:2]
        if self.token is None and not _loopback(host):
            logger.warning("dashboard: listening on %s without a token: whoever reaches it "
                           "sees the message data of the failures (--dashboard-token)", host)
        self._event = self._encode()
        self._ticker = loop.create_task(self._tick(), name="dashboard-ticker")

    async def stop(self) -> None:
        """Stop sampling and listening, drop every viewer and connection (idempotent)."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.wait((ticker,))
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for viewer in list(self.viewers):
            self._drop(viewer)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.metrics.close()

    async def __aenter__(self) -> Dashboard:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- sampling ----------------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sampler.tick()
            self._event = self._encode()
            for viewer in list(self.viewers):
                try:
                    viewer.events.put_nowait(self._event)
                except asyncio.QueueFull:
                    self._dropped.log("dashboard: viewer %s reads too little (%d events "
                                      "unsent); dropped", viewer.peer, viewer.events.qsize())
                    self._drop(viewer)

    def _encode(self) -> bytes:
        return b"data: " + json.dumps(self.sampler.snapshot, separators=(",", ":"),
                                      default=str).encode() + b"\n\n"

    def _drop(self, viewer: _Viewer) -> None:
        self.viewers.discard(viewer)
        if viewer.transport is not None:
            viewer.transport.abort()

    # -- routes ------------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token is not None and not request.path.startswith("/static/"):
            given = request.query.get("token", "")
            bearer = request.headers.get("Authorization", "")
            if bearer.startswith("Bearer "):
                given = bearer[len("Bearer "):]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                self._refused.log("dashboard: %s %s without the token from %s",
                                  request.method, request.path[:100], request.remote)
                return web.Response(status=401, text="the dashboard's token is needed: "
                                    "Authorization: Bearer TOKEN or ?token=TOKEN\n",
                                    headers={"WWW-Authenticate": "Bearer"})
        response: web.StreamResponse = await handler(request)
        return response

    async def _page(self, request: web.Request) -> web.Response:
        body, content_type = self._static["index.html"]
        return web.Response(body=body, headers={**_HEADERS, "Content-Type": content_type})

    async def _file(self, request: web.Request) -> web.Response:
        found = self._static.get(request.match_info["name"])
        if found is None or found[1].startswith("text/html"):
            raise web.HTTPNotFound()
        return web.Response(body=found[0], headers={**_HEADERS, "Content-Type": found[1]})

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _snapshot(self, request: web.Request) -> web.Response:
        return web.Response(body=self._event[len(b"data: "):-2],
                            headers={**_HEADERS, "Content-Type": "application/json"})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if len(self.viewers) >= self.limits.max_viewers:
            self._refused.log("dashboard: %d viewers, refused %s", len(self.viewers),
                              request.remote)
            return web.Response(status=503, text="too many viewers\n")
        response = web.StreamResponse(headers={
            **_HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:  # what the kernel holds for a viewer that stops reading
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                self.limits.viewer_send_buffer)
        if transport is not None:
            transport.set_write_buffer_limits(high=self.limits.viewer_send_buffer)
        viewer = _Viewer(transport, self.limits.viewer_backlog)
        self.viewers.add(viewer)
        try:
            await response.write(self._event)
            while viewer in self.viewers:
                await response.write(await viewer.events.get())
        except (ConnectionError, RuntimeError):  # gone, or dropped: the transport is closed
            pass
        finally:
            self.viewers.discard(viewer)
        return response
