"""Distribution over TLS against OTP's own (``-proto_dist inet_tls``), both directions: the TLS
handshake, the distribution handshake inside it with 4-byte headers, then frames as usual."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pybroadway.erldist import Node
from pybroadway.erldist.framing import REUSED_SIZE
from pybroadway.erldist.handshake import WrongCookie
from pybroadway.term import Atom
from testkit.peers import BeamPeer, SystemEpmd
from testkit.tls import optfile, tls_settings
from testkit.wait import eventually_async
from tests.conftest import Pki
from tests.erldist.nodekit import Echo, Mailbox, assert_over_tls, atom, ev, python_node, tls_beam

pytestmark = pytest.mark.timeout(90)

BIG = 4 << 20  # a binary of 4 MiB: frames longer than the reader's reusable buffer


@contextlib.asynccontextmanager
async def tls_pair(otp: str, epmd: SystemEpmd, pki: Pki,
                   tmp_path: Path) -> AsyncIterator[tuple[Node, BeamPeer]]:
    """A Python node and an erl node, both with TLS distribution and certificates of one CA,
    not connected yet."""
    options = optfile(tmp_path / "dist.conf", pki.ca, pki.node)
    async with python_node(epmd.port, tls=tls_settings(pki.ca, pki.node)) as node, \
            tls_beam(otp, epmd, options) as peer:
        node.expose("calc", "add", lambda a, b: a + b)
        yield node, peer


async def test_beam_dials_python_over_tls(otp: str, epmd: SystemEpmd, pki: Pki,
                                          tmp_path: Path) -> None:
    async with tls_pair(otp, epmd, pki, tmp_path) as (node, peer):
        py = atom(node)
        assert await ev(peer, f"net_adm:ping({py})") == Atom("pong")
        assert_over_tls(node, peer)
        assert await ev(peer, f"lists:member({py}, nodes())") is True
        node.spawn(Echo(), name="echo")
        assert await ev(peer, f"gen_server:call({{echo, {py}}}, hello)") == \
            (Atom("echo"), Atom("hello"))
        assert await ev(peer, f"rpc:call({py}, calc, add, [2, 40])") == 42
        inbox = node.spawn(Mailbox(), name="inbox")
        await ev(peer, f"{{inbox, {py}}} ! {{from_beam, self()}}, ok")
        _, beam_pid = await inbox.receive(timeout=10)
        node.send(beam_pid, (Atom("from_python"), 1))
        assert await ev(peer, "receive {from_python, N} -> N after 10000 -> none end") == 1
        # 4 MiB to Python and back, in frames longer than any buffer the reader reuses.
        assert await ev(peer, f"B = crypto:strong_rand_bytes({BIG}), "
                              f"{{echo, B}} =:= gen_server:call({{echo, {py}}}, B, 30000)") \
            is True


async def test_python_dials_beam_over_tls(otp: str, epmd: SystemEpmd, pki: Pki,
                                          tmp_path: Path) -> None:
    async with tls_pair(otp, epmd, pki, tmp_path) as (node, peer):
        assert await node.connect(peer.node, check=True)
        assert_over_tls(node, peer)
        beam = Atom(peer.node)
        rex = (Atom("rex"), beam)
        assert await node.call(rex, (Atom("call"), Atom("erlang"), Atom("node"), [],
                                     Atom("user")), timeout=10) == beam
        await ev(peer, "register(tlsbox, spawn(fun() -> receive {From, M} -> "
                       "From ! {got, M} end end)), ok")
        inbox = node.spawn(Mailbox())
        node.send((Atom("tlsbox"), beam), (inbox.pid, Atom("ping")))
        assert await inbox.receive(timeout=10) == (Atom("got"), Atom("ping"))
        big = bytes(range(256)) * (BIG // 256)
        echoed = await node.call(rex, (Atom("call"), Atom("erlang"), Atom("iolist_to_binary"),
                                       [[big]], Atom("user")), timeout=30)
        assert echoed == big
        assert await ev(peer, f"net_adm:ping({atom(node)})") == Atom("pong")


async def test_a_held_reader_over_tls_holds_a_bounded_amount_and_loses_nothing(
        epmd: SystemEpmd, pki: Pki) -> None:
    """While a connection's reader is held (backpressure), what the peer sends waits in the
    socket: TLS decrypts no more than its read-ahead, the reader takes nothing; on release
    every message comes, in order."""
    settings = tls_settings(pki.ca, pki.node)
    async with python_node(epmd.port, tls=settings) as node, \
            python_node(epmd.port, tls=settings) as sender:
        inbox = node.spawn(Mailbox(), name="inbox")
        assert await sender.connect(node.name, check=True)
        held, sending = node.connection(sender.name), sender.connection(node.name)
        assert held is not None and sending is not None
        held.pause_reading()
        count, chunk = 4000, bytes(4096)
        for seq in range(count):
            sender.send((Atom("inbox"), node.name), (seq, chunk))
        # TLS reads ahead what the node does not take, up to its limit, and stops there.
        tls = held._transport
        await eventually_async(lambda: tls.get_read_buffer_size() >= REUSED_SIZE, timeout=10)
        reader = held._frames
        assert inbox.mailbox_size == 0
        assert reader._late is None and reader._own is None
        assert len(reader._buffer) == REUSED_SIZE
        assert tls.get_read_buffer_size() <= 2 * REUSED_SIZE
        held.resume_reading()
        got = [await inbox.receive(timeout=10) for _ in range(count)]
        assert [seq for seq, _ in got] == list(range(count))


async def test_a_wrong_cookie_inside_tls_is_refused_both_ways(
        otp: str, epmd: SystemEpmd, pki: Pki, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pybroadway")
    options = optfile(tmp_path / "dist.conf", pki.ca, pki.node)
    async with python_node(epmd.port, cookie="not-the-peers",
                           tls=tls_settings(pki.ca, pki.node)) as node, \
            tls_beam(otp, epmd, options) as peer:
        with pytest.raises(WrongCookie):
            await node.connect(peer.node, check=True)
        assert await ev(peer, f"net_kernel:connect_node({atom(node)})") is False
        await eventually_async(lambda: any("wrong cookie" in r.getMessage()
                                           and "from" in r.getMessage()
                                           for r in caplog.records))
        assert not node.nodes()


async def test_what_a_peer_leaves_unread_over_tls_is_counted(
        epmd: SystemEpmd, pki: Pki) -> None:
    """What waits to be written counts, wherever TLS keeps it (encrypted, in the TCP
    transport beneath it too): max_pending_output and the node's total bound see it."""
    settings = tls_settings(pki.ca, pki.node)
    async with python_node(epmd.port, tls=settings) as node, \
            python_node(epmd.port, tls=settings) as sender:
        assert await sender.connect(node.name, check=True)
        held, sending = node.connection(sender.name), sender.connection(node.name)
        assert held is not None and sending is not None
        held.pause_reading()
        total = 32 << 20
        for _ in range(total // (1 << 20)):
            sender.send((Atom("nobody"), node.name), bytes(1 << 20))
        # The kernel's buffers on loopback take some MiB; the rest waits in the sender, and
        # keeps being counted as TLS hands it on to the TCP transport beneath.
        for _ in range(20):
            await asyncio.sleep(0.05)
            assert sending.write_buffer_size >= total // 2
