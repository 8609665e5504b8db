"""The node's bounded HTTP server (pybroadway._http): what a client may send, what it gets when
it sends more, and that nothing of a connection is held once it is closed."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from pybroadway._http import HttpLimits, HttpServer, Request, Response
from testkit.wait import eventually_async

LIMITS = HttpLimits(max_connections=4, max_header_bytes=1024, max_header_lines=10,
                    max_request_bytes=2048, timeout=5.0)


def echo(request: Request) -> Response:
    """Answers with what it was asked, so a test sees what reached the handler."""
    if request.path == "/fail":
        raise RuntimeError("the handler failed")
    if request.path == "/big":
        return Response(200, b"x" * (8 << 20))
    return Response(200, f"{request.method} {request.path} {request.body!r}".encode())


@asynccontextmanager
async def serving(limits: HttpLimits = LIMITS) -> AsyncIterator[HttpServer]:
    server = HttpServer(echo, limits)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


async def exchange(server: HttpServer, data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_a_request_within_the_limits_reaches_the_handler() -> None:
    async with serving() as server:
        answer = await exchange(server, b"GET /x?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b"\r\n\r\nGET /x b''")
        answer = await exchange(
            server, b"POST /y HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello and more")
        assert answer.endswith(b"POST /y b'hello'")
        answer = await exchange(server, b"HEAD / HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n")
        assert b"Content-Length: 10\r\n" in answer  # "HEAD / b''"


@pytest.mark.parametrize(("request_bytes", "expected"), [
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 2000, 431),               # no end of headers in sight
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 1100 + b"\r\n\r\n", 431),  # complete, but too long
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 11 + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nContent-Length: 4096\r\n\r\n", 413),     # refused before the body
    (b"POST / HTTP/1.1\r\nContent-Length: 2100\r\n\r\n" + b"b" * 3000, 413),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
    (b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n folded\r\n\r\n", 400),
])
async def test_a_request_beyond_the_limits_is_answered_and_closed(
        request_bytes: bytes, expected: int) -> None:
    async with serving() as server:
        answer = await exchange(server, request_bytes)
        assert status(answer) == expected, answer
        await eventually_async(lambda: server.connections == 0)
        assert server.buffered == 0


async def test_a_failing_handler_is_a_500_and_a_log_line(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    async with serving() as server:
        with caplog.at_level(logging.ERROR, "pybroadway.http"):
            answer = await exchange(server, b"GET /fail HTTP/1.1\r\n\r\n")
    assert status(answer) == 500
    assert "http: GET '/fail' failed: RuntimeError: the handler failed" in caplog.text


async def test_at_the_cap_a_new_connection_replaces_the_oldest_stalled_one() -> None:
    async with serving() as server:
        stalled = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(6)]
        for _, writer in stalled:
            writer.write(b"GET / HTTP/1.1\r\nX: " + b"a" * 900)  # and never the blank line
        await eventually_async(lambda: server.buffered == 4 * 919)
        assert server.connections == 4
        # the two oldest were closed without an answer, the four newest are still open
        for reader, _ in stalled[:2]:
            assert await asyncio.wait_for(reader.read(), 10) == b""
        assert not any(reader.at_eof() for reader, _ in stalled[2:])
        # a fresh request is answered meanwhile, and takes the place of the oldest stalled
        answer = await exchange(server, b"GET /now HTTP/1.1\r\n\r\n")
        assert answer.endswith(b"GET /now b''")
        assert await asyncio.wait_for(stalled[2][0].read(), 10) == b""
        for _, writer in stalled:
            writer.close()
        await eventually_async(lambda: server.connections == 0)
        assert server.buffered == 0


async def test_at_the_cap_with_every_connection_being_answered_a_new_one_gets_503() -> None:
    async with serving(HttpLimits(max_connections=1)) as server:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # it takes its answer slowly
        slow.setblocking(False)
        await asyncio.get_running_loop().sock_connect(slow, ("127.0.0.1", server.port))
        try:
            await asyncio.get_running_loop().sock_sendall(slow, b"GET /big HTTP/1.1\r\n\r\n")
            await eventually_async(lambda: server.connections == 1 and not server._waiting)
            answer = await exchange(server, b"GET / HTTP/1.1\r\n\r\n")
            assert status(answer) == 503
            assert server.connections == 1
        finally:
            slow.close()
        await eventually_async(lambda: server.connections == 0)


async def test_a_connection_is_dropped_at_its_deadline() -> None:
    async with serving(HttpLimits(timeout=0.2)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\n")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert server.connections == 0 and server.buffered == 0
        writer.close()


async def test_stop_drops_every_connection() -> None:
    server = HttpServer(echo, LIMITS)
    await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\n")
    await eventually_async(lambda: server.buffered > 0)
    await server.stop()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert server.connections == 0 and server.buffered == 0
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)


@pytest.mark.parametrize("field", ["max_connections", "max_header_bytes", "max_header_lines",
                                   "max_request_bytes", "timeout"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        HttpLimits(**{field: 0})


def test_a_request_holds_at_least_its_headers() -> None:
    with pytest.raises(ValueError, match="max_request_bytes must be at least max_header_bytes"):
        HttpLimits(max_header_bytes=2048, max_request_bytes=1024)
