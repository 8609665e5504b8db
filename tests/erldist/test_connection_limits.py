"""Connections that have not shown the cookie are capped and their failures cannot flood the
log; the node keeps serving the nodes that have."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from pybroadway.erldist import epmd as epmd_client
from pybroadway.erldist import flags as dflags
from pybroadway.erldist import handshake
from pybroadway.erldist.connections import CLOSE_GRACE
from pybroadway.erldist.node import Node
from pybroadway.term import Atom, Pid, Reference, encode
from testkit.peers import free_port, unique_name
from testkit.wait import eventually_async
from tests.erldist.test_bad_input import frame

pytestmark = pytest.mark.timeout(60)


class MutePeer:
    """A peer that has shown the cookie and then reads nothing: it asks the node for DOWNs
    (monitors of processes that do not exist), whose answers the node must hold for it."""

    def __init__(self, name: Atom, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.name = name
        self.reader = reader  # unread, unless a test reads it
        self.writer = writer
        me = Pid(name, 1, 0, 1)
        self.monitor = frame(b"\x70" + encode((19, me, Atom("nobody"),
                                                Reference(name, 1, (1, 2, 3)))))

    @classmethod
    async def connect(cls, node: Node) -> MutePeer:
        address = await epmd_client.port_please(node.alive_name, epmd_port=node.epmd_port)
        assert address is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", address.port)
        name = Atom(f"{unique_name('mute')}@localhost")
        await handshake.connect(reader, writer, our_name=name.name, cookie=node.cookie,
                                creation=1, flags=dflags.default_flags(hidden=True),
                                peer_name=node.name.name, timeout=10)
        assert name in node.nodes()
        return cls(name, reader, writer)

    async def ask(self, monitors: int, timeout: float = 5) -> None:
        """Ask for ``monitors`` more answers (each a DOWN it will not read)."""
        self.writer.write(self.monitor * monitors)
        await asyncio.wait_for(self.writer.drain(), timeout)
        await asyncio.sleep(0)  # the node's answers go out (or wait) meanwhile

    async def fill(self, node: Node, upto: int) -> None:
        """Ask until the node holds ``upto`` bytes for this peer or drops a connection."""
        nodes = len(node.nodes())
        while 0 <= self.held(node) < upto and len(node.nodes()) == nodes:
            await self.ask(500)

    def held(self, node: Node) -> int:
        """What the node holds unread for this peer (-1: not connected)."""
        connection = node.connection(self.name)
        return connection.write_buffer_size if connection is not None else -1


async def test_handshakes_in_progress_are_capped_and_nodes_keep_connecting() -> None:
    epmd_port = free_port()
    async with Node(f"{unique_name('capped')}@localhost", cookie="c", epmd_port=epmd_port,
                    max_handshakes=5, handshake_timeout=30) as node, \
            Node(f"{unique_name('friend')}@localhost", cookie="c",
                 epmd_port=epmd_port) as friend:
        assert await friend.connect(node.name)  # connected before the flood
        address = await epmd_client.port_please(node.alive_name, epmd_port=epmd_port)
        assert address is not None
        idle = [await asyncio.open_connection("127.0.0.1", address.port) for _ in range(5)]
        await eventually_async(lambda: node._net._handshaking == 5)
        # The sixth is closed at once, unanswered.
        reader, writer = await asyncio.open_connection("127.0.0.1", address.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # What connected before is served: a call over the existing connection.
        assert await friend.call(("net_kernel", node.name.name),
                                 (Atom("is_auth"), friend.name)) == Atom("yes")
        for _reader, idle_writer in idle:
            idle_writer.close()
        await eventually_async(lambda: node._net._handshaking == 0)
        async with Node(f"{unique_name('late')}@localhost", cookie="c",
                        epmd_port=epmd_port) as late:
            assert await late.connect(node.name)


async def test_a_flood_of_garbage_connections_logs_a_few_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pybroadway")
    epmd_port = free_port()
    async with Node(f"{unique_name('flooded')}@localhost", cookie="c",
                    epmd_port=epmd_port) as node:
        address = await epmd_client.port_please(node.alive_name, epmd_port=epmd_port)
        assert address is not None
        for _ in range(200):
            reader, writer = await asyncio.open_connection("127.0.0.1", address.port)
            writer.write(b"\x00\x05Xjunk")  # a packet with no meaning: refused at once
            await asyncio.wait_for(reader.read(), 5)
            writer.close()
        await asyncio.sleep(1.1)  # the throttle's interval ends: its count is logged
        lines = [r.getMessage() for r in caplog.records if "handshake" in r.getMessage()]
        assert 1 <= len(lines) <= 10, lines
        assert "failed incoming handshakes in 1s were not logged" in lines[-1]


async def test_a_peer_that_reads_nothing_is_dropped_past_max_pending_output(
        caplog: pytest.LogCaptureFixture) -> None:
    """Monitors of processes that do not exist are each answered with a DOWN: a peer that
    asks for ever more and reads none makes the node hold the answers, up to a bound."""
    caplog.set_level(logging.ERROR, logger="pybroadway")
    epmd_port = free_port()
    async with Node(f"{unique_name('unread')}@localhost", cookie="c", epmd_port=epmd_port,
                    max_pending_output=1 << 20) as node:
        peer = await MutePeer.connect(node)
        connection = node.connection(peer.name)
        assert connection is not None
        for _ in range(100):  # 100 x 2,000 monitors, never reading an answer
            with contextlib.suppress(ConnectionError, TimeoutError):
                await peer.ask(2000, timeout=1)
            if peer.name not in node.nodes():
                break
        assert peer.name not in node.nodes()
        # what it left unread is freed with it, not kept until it reads
        assert connection.closed and connection.write_buffer_size == 0
        assert any("reads nothing" in r.getMessage() for r in caplog.records)
        peer.writer.close()


async def test_peers_that_read_nothing_are_bounded_together_by_max_total_pending_output(
        caplog: pytest.LogCaptureFixture) -> None:
    """Three peers that each stay under ``max_pending_output`` but together pass
    ``max_total_pending_output``: the one the node holds most for is dropped, the others
    stay connected."""
    caplog.set_level(logging.ERROR, logger="pybroadway")
    mib = 1 << 20
    epmd_port = free_port()
    async with Node(f"{unique_name('unread')}@localhost", cookie="c", epmd_port=epmd_port,
                    max_pending_output=4 * mib, max_total_pending_output=6 * mib) as node:
        a, b, c = peers = [await MutePeer.connect(node) for _ in range(3)]
        try:
            await a.fill(node, 3 * mib)
            await b.fill(node, 2 * mib)
            # each under its bound, both under the total
            assert set(node.nodes()) == {a.name, b.name, c.name}
            first = node.connection(a.name)
            assert first is not None
            await c.fill(node, 3 * mib)
            # the total passed: the one holding most (a) went, the others are served, and
            # what a had left unread is not held any more
            assert set(node.nodes()) == {b.name, c.name}
            assert first.closed and first.write_buffer_size == 0
            assert b.held(node) + c.held(node) <= 6 * mib
            assert any("max_total_pending_output" in r.getMessage() for r in caplog.records)
        finally:
            for peer in peers:
                peer.writer.close()


async def test_a_peer_that_reads_nothing_cannot_keep_the_node_from_stopping() -> None:
    node = Node(f"{unique_name('stopping')}@localhost", cookie="c", epmd_port=free_port())
    await node.start()
    try:
        peer = await MutePeer.connect(node)
        connection = node.connection(peer.name)
        assert connection is not None
        await peer.fill(node, 1 << 20)
        started = time.monotonic()
        await asyncio.wait_for(node.stop(), CLOSE_GRACE + 5)
        assert time.monotonic() - started < CLOSE_GRACE + 2
        assert connection.closed and connection.write_buffer_size == 0
        peer.writer.close()
    finally:
        await node.stop()


async def test_a_peer_silent_past_the_tick_time_is_dropped_with_what_it_left_unread() -> None:
    async with Node(f"{unique_name('ticking')}@localhost", cookie="c", epmd_port=free_port(),
                    ticktime=1.0) as node:
        peer = await MutePeer.connect(node)
        try:
            connection = node.connection(peer.name)
            assert connection is not None
            await peer.fill(node, 1 << 20)
            # then silence: no tick, no read
            await eventually_async(lambda: connection.closed, timeout=5)
            assert connection.write_buffer_size == 0
        finally:
            peer.writer.close()
