"""Big binaries in and out, with both codecs: every size round-trips with a BEAM peer, a large
binary sent to a peer that reads nothing counts against its bound at once, a peer gone in the
middle of a frame leaves nothing held, and pushing 1 GiB through does not grow the node."""

from __future__ import annotations

import asyncio
import os
import random
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from pybroadway.erldist.framing import EAGER_SIZE, REUSED_SIZE
from pybroadway.erldist.output import PIECE
from pybroadway.term import Atom, Decoder, Pid
from testkit.peers import BeamPeer, SystemEpmd
from tests.erldist.nodekit import WAIT, Mailbox, NodeEvents, ev, python_node
from tests.erldist.test_big_frames import raw_peer
from tests.erldist.test_connection_limits import MutePeer
from tests.term.conftest import implementation

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["implementation"]  # both codecs, as in tests/term

SIZES = [0, 1, 255, 65535, 65536, 65537, REUSED_SIZE - 100, REUSED_SIZE, REUSED_SIZE + 1,
         1 << 20, EAGER_SIZE + 1, 64 << 20]
ECHO = ("register(bulk_echo, spawn(fun() -> Loop = fun Loop() -> "
        "receive {P, B} -> P ! {echoed, B}, Loop() end end, Loop() end)), ok")


async def test_binaries_of_every_size_round_trip_with_a_beam_peer(
        epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        await ev(erl_node, ECHO)
        box = node.spawn(Mailbox())
        echo = (Atom("bulk_echo"), Atom(erl_node.node))
        payloads = [random.Random(size).randbytes(size) for size in SIZES]
        for payload in payloads:  # one at a time
            node.send(echo, (box.pid, payload))
            assert await box.receive(timeout=WAIT * 3) == (Atom("echoed"), payload)
        for payload in payloads:  # all at once: several frames per write and per read
            node.send(echo, (box.pid, payload))
        for payload in payloads:
            got = await box.receive(timeout=WAIT * 3)
            assert type(got[1]) is bytes and got == (Atom("echoed"), payload)


async def test_a_large_binary_for_a_peer_that_reads_nothing_counts_against_its_bound(
        epmd: SystemEpmd) -> None:
    async with python_node(epmd.port, max_pending_output=8 << 20) as node:
        mute = await MutePeer.connect(node)
        connection = node.connection(mute.name)
        assert connection is not None
        target = Pid(mute.name, 1, 0, 1)
        payload = bytes(1 << 20)
        node.send(target, payload)
        assert connection.write_buffer_size > len(payload)  # held from the moment it is sent
        for _ in range(256):
            if mute.name not in node.nodes():
                break
            node.send(target, payload)
            await asyncio.sleep(0)  # the write goes out (or waits) in the next turn
        assert mute.name not in node.nodes()
        assert connection.write_buffer_size == 0


async def test_what_a_slow_peer_has_not_taken_waits_uncopied_and_arrives_whole(
        epmd: SystemEpmd) -> None:
    """Large binaries for a peer that does not read wait as themselves, not copied into the
    transport's buffer (it holds at most one piece); ticks due meanwhile do not cut into
    them; once the peer reads, every frame arrives whole and in order."""
    async with python_node(epmd.port, ticktime=1.0) as node:
        mute = await MutePeer.connect(node)
        connection = node.connection(mute.name)
        assert connection is not None
        target = Pid(mute.name, 1, 0, 1)
        payloads = [bytes([i]) * (1 << 20) for i in range(24)]
        for payload in payloads:
            node.send(target, payload)
        await asyncio.sleep(0)  # flushed: the socket takes what it can
        transport = connection._transport
        assert connection.write_buffer_size > 8 << 20  # the socket cannot take 24 MiB
        assert transport.get_write_buffer_size() <= PIECE
        for _ in range(6):  # past a tick interval (ticktime / 4), the peer ticking meanwhile
            mute.writer.write(b"\0\0\0\0")
            await asyncio.sleep(0.1)
        decoder = Decoder()
        received = []
        while len(received) < len(payloads):
            (size,) = struct.unpack(">I", await mute.reader.readexactly(4))
            if size == 0:
                continue  # a tick
            body = await mute.reader.readexactly(size)
            assert body[0] == 112
            control, at = decoder.decode_from(body, 1)
            assert control[0] in (2, 22) and control[-1] == target
            message, at = decoder.decode_from(body, at)
            assert at == size
            received.append(message)
        assert received == payloads
        assert connection.write_buffer_size == 0
        mute.writer.close()


async def test_a_peer_gone_in_the_middle_of_a_frame_leaves_nothing_held(
        epmd: SystemEpmd) -> None:
    async with python_node(epmd.port) as node:
        tracemalloc.start()
        try:
            events = NodeEvents(node)
            _, writer = await raw_peer(node, epmd.port)
            (peer,) = node.nodes()
            before = tracemalloc.get_traced_memory()[0]
            writer.write((100 << 20).to_bytes(4, "big") + bytes(8 << 20))
            await writer.drain()
            writer.close()
            await events.wait(peer, False)
            assert tracemalloc.get_traced_memory()[0] - before < 1 << 20
        finally:
            tracemalloc.stop()


def test_pushing_a_gib_in_mib_messages_does_not_grow_the_node(implementation: str) -> None:
    pure = {"PYBROADWAY_PURE_PYTHON": "1" if implementation == "python" else "0"}
    done = subprocess.run([sys.executable, "-m", "tests.erldist.bulk_push"], cwd=ROOT,
                          capture_output=True, text=True, timeout=110, check=False,
                          env={**os.environ, **pure})
    assert done.returncode == 0, done.stderr[-2000:]
    grown_mib = float(done.stdout.split()[-1])
    assert grown_mib < 64, done.stdout
