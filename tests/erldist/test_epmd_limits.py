"""The embedded EPMD obeys only what Erlang's epmd obeys and holds only what it bounds:
KILL refused while nodes are registered and STOP ignored (unless relaxed), over-long names and
requests refused, registrations and connections capped. Erlang's own epmd is the reference
where it can be asked the same thing."""

from __future__ import annotations

import asyncio
import logging
import struct
import subprocess
from collections.abc import AsyncIterator, Callable

import pytest

from pybroadway.erldist import epmd as E
from testkit.peers import free_port, require, unique_name, wait_for_port

pytestmark = pytest.mark.timeout(60)


def alive2(name: bytes, port: int = 5555) -> bytes:
    body = struct.pack(">BHBBHHH", 120, port, 77, 0, 6, 5, len(name)) + name + b"\0\0"
    return struct.pack(">H", len(body)) + body


async def ask(port: int, request: bytes) -> bytes:
    """Send one framed request and read until the server closes (b"" if it resets the
    connection: it closed it with our request unread)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def stop_request(name: str) -> bytes:
    return struct.pack(">H", len(name) + 1) + b"s" + name.encode()


@pytest.fixture
async def system_epmd() -> AsyncIterator[Callable[[], int]]:
    """Erlang's epmd on a private port, started on demand, without -relaxed_command_check."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> int:
        port = free_port()
        procs.append(subprocess.Popen([require("epmd", "epmd"), "-port", str(port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(port)
        return port

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


async def kill_and_stop_while_registered(port: int) -> tuple[bool, bytes, list[str]]:
    name = unique_name("live")
    async with await E.register(name, 5555, epmd_port=port):
        killed = await E.kill(epmd_port=port)
        stopped = await ask(port, stop_request(name))
        names = [n for n, _ in await E.names(epmd_port=port)]
    return killed, stopped, names


@pytest.mark.beam  # Erlang's epmd is the reference
async def test_kill_refused_and_stop_ignored_while_registered_like_epmd(
        system_epmd: Callable[[], int]) -> None:
    reference = await kill_and_stop_while_registered(system_epmd())
    async with E.EmbeddedEpmd() as srv:
        ours = await kill_and_stop_while_registered(srv.port)
        assert srv.serving
        assert await E.kill(epmd_port=srv.port)  # nobody registered now: it stops
        await asyncio.wait_for(srv.wait_closed(), 5)
    assert ours[:2] == reference[:2] == (False, b"")
    assert len(ours[2]) == len(reference[2]) == 1


async def test_relaxed_command_check_obeys_stop_and_kill() -> None:
    async with E.EmbeddedEpmd(relaxed_command_check=True) as srv:
        name = unique_name("live")
        async with await E.register(name, 5555, epmd_port=srv.port) as reg:
            assert await ask(srv.port, stop_request(name)) == b"STOPPED"
            await asyncio.wait_for(reg.wait_lost(), 5)
        async with await E.register(name, 5555, epmd_port=srv.port):
            assert await E.kill(epmd_port=srv.port)
            await asyncio.wait_for(srv.wait_closed(), 5)


async def test_long_names_and_requests_are_refused() -> None:
    async with E.EmbeddedEpmd() as srv:
        # 256 characters fit in a request but not in an atom: an error reply.
        reply = await ask(srv.port, alive2(b"n" * 256))
        assert reply[:2] == b"v\x01"
        # 65 KB is not even read: the connection is closed without a reply.
        assert await ask(srv.port, alive2(b"n" * 65_000)) == b""
        assert srv.registered() == {}
        # 255 characters (multi-byte ones too) are a valid name.
        name = "n" * 255
        async with await E.register(name, 5555, epmd_port=srv.port):
            assert list(srv.registered()) == [name]


async def test_registrations_are_capped_and_lookups_still_served() -> None:
    async with E.EmbeddedEpmd(max_registrations=3) as srv:
        held = [await E.register(unique_name("r"), 6000 + i, epmd_port=srv.port)
                for i in range(3)]
        try:
            with pytest.raises(E.EpmdError):
                await E.register(unique_name("r"), 6100, epmd_port=srv.port)
            assert len(await E.names(epmd_port=srv.port)) == 3
        finally:
            for registration in held:
                await registration.close()


async def test_connections_are_capped_and_freed() -> None:
    async with E.EmbeddedEpmd(max_connections=5, request_timeout=30) as srv:
        idle = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(5)]
        try:
            # The sixth is closed at once, unserved.
            assert await ask(srv.port, struct.pack(">H", 1) + b"n") == b""
        finally:
            for _reader, writer in idle:
                writer.close()
        async def served() -> bool:
            try:
                await E.names(epmd_port=srv.port)
            except E.EpmdError:
                return False
            return True
        for _ in range(50):  # the server notices the closed idle connections
            if await served():
                break
            await asyncio.sleep(0.05)
        assert await served()


async def test_a_flood_of_bad_requests_is_logged_a_few_lines_a_second(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pybroadway")
    bad = [struct.pack(">H", 2) + b"\xee\x00",  # an unknown request
           alive2(b"n" * 256),  # a name too long
           stop_request("x"),  # STOP, not relaxed
           struct.pack(">H", 3) + b"z\x01\x02"]  # ALIVE2_REQ too short to parse
    async with E.EmbeddedEpmd() as srv:
        for i in range(200):
            await ask(srv.port, bad[i % len(bad)])
        assert srv.serving
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epmd: ")]
    assert 4 <= len(lines) < 40, lines  # 200 bad requests, 5 lines a second
