"""A distribution-level fuzzer against a running server while a legitimate Elixir client
pushes: over 100,000 frames, most of them well framed but random in their terms (control ops
of every kind, random messages), some mutated byte by byte (flipped, cut, lying lengths,
compressed bombs). The node stays up, the client loses nothing, memory stays bounded."""

from __future__ import annotations

import asyncio
import random
import resource
import struct
import zlib
from typing import Any

import pytest

from pybroadway.erldist import Process, handshake
from pybroadway.erldist import flags as dflags
from pybroadway.erldist.node import Node
from pybroadway.term import Atom, Pid, Reference, encode
from testkit.peers import SystemEpmd, unique_name
from tests.erldist.test_bad_input import open_raw
from tests.otp_distribution.helpers import elixir_peer, receiver_ref, server

pytestmark = pytest.mark.timeout(300)

FRAMES = 100_000
MUTATED_SHARE = 0.03  # of the frames; each mutated one usually costs its connection
LEGIT = 20_000
TARGETS = ("net_kernel", "global_name_server", "rex", "off_broadway_otp_distribution_receiver")
SEED = 20261128


class Sink(Process):
    """Takes whatever it is sent and keeps only a count."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def deliver_from(self, sender: Pid | None, message: Any) -> None:
        self.count += 1


class FrameMaker:
    """Random but well-framed frames from ``us`` (a node name) to ``node``, and mutations."""

    def __init__(self, rng: random.Random, node: Node, us: Atom, sink: Pid) -> None:
        self.rng = rng
        self.node = node
        self.us = us
        self.sink = sink

    def term(self, depth: int = 0) -> Any:
        r = self.rng
        kind = r.randrange(10 if depth < 3 else 6)
        if kind == 0:
            return r.randrange(-(2**40), 2**40)
        if kind == 1:
            return r.random() * 1e6
        if kind == 2:
            return Atom(r.choice(["ok", "error", "nil", "x", "$gen_cast", "DOWN", "🙂"]))
        if kind == 3:
            return r.randbytes(r.randrange(0, 64))
        if kind == 4:
            return self.pid()
        if kind == 5:
            return r.randrange(256)
        if kind == 6:
            return [self.term(depth + 1) for _ in range(r.randrange(5))]
        if kind == 7:
            return tuple(self.term(depth + 1) for _ in range(r.randrange(5)))
        if kind == 8:
            return {r.randrange(100): self.term(depth + 1) for _ in range(r.randrange(4))}
        caller = r.choice([self.pid(ours=True), 1, Atom("nobody"), (1, 2)])  # some malformed
        return (Atom("$gen_call"), (caller, self.ref()), self.term(depth + 1))

    def pid(self, ours: bool = False) -> Pid:
        """One of ours, or one of the server node's that does not exist."""
        node = self.us if ours else self.node.name
        return Pid(node, self.rng.randrange(10_000, 1_000_000), 0, self.node.creation)

    def ref(self) -> Reference:
        return Reference(self.us, 1, (self.rng.randrange(2**18), 1, 2))

    def frame(self) -> bytes:
        r = self.rng
        kind = r.randrange(9)
        if kind < 3:
            body = encode((2, Atom(""), self.sink)) + encode(self.term())
        elif kind == 3:
            # Named processes: the system ones and the receiver too, with whatever comes.
            name = r.choice([*TARGETS, f"nobody_{r.randrange(50)}"])
            body = encode((6, self.pid(True), Atom(""), Atom(name))) + encode(self.term())
        elif kind == 4:
            body = encode((22, self.pid(True), self.pid())) + encode(self.term())
        elif kind == 5:
            body = encode((r.choice([1, 4]), self.pid(True), self.pid()))
        elif kind == 6:
            body = encode((r.choice([19, 20]), self.pid(True), self.pid(), self.ref()))
        elif kind == 7:
            body = encode((8, self.pid(True), self.pid(), self.term()))
        else:
            body = encode((33, self.pid(True), self.ref())) + encode(self.term())
        return _frame(b"\x70" + body)

    def mutated(self) -> bytes:
        """A frame broken in one of the ways a buggy or hostile peer breaks them."""
        r = self.rng
        frame = bytearray(self.frame())
        how = r.randrange(6)
        if how == 0:  # flipped bytes, length kept
            for _ in range(r.randrange(1, 4)):
                at = r.randrange(4, len(frame))
                frame[at] ^= 1 << r.randrange(8)
        elif how == 1:  # a lying length
            struct.pack_into(">I", frame, 0, r.choice([len(frame) + 1000, 3, 2**31]))
        elif how == 2:  # cut short inside a term (its frame length says so)
            cut = r.randrange(6, len(frame))
            frame = bytearray(_frame(bytes(frame[4:cut])))
        elif how == 3:  # random bytes after a valid head
            frame = bytearray(_frame(bytes(frame[4:8]) + r.randbytes(r.randrange(1, 200))))
        elif how == 4:  # a compressed bomb as the message
            body = b"l" + struct.pack(">I", 4 << 20) + b"j" * (4 << 20) + b"j"
            bomb = b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body, 9)
            frame = bytearray(_frame(b"\x70" + encode((2, Atom(""), self.sink)) + bomb))
        else:  # deep nesting (which is fine) down to a tuple that cannot fit in the frame
            deep = b"\x83" + b"l\x00\x00\x00\x01" * 400 + b"i\xff\xff\xff\xff" + b"j" * 400
            frame = bytearray(_frame(b"\x70" + encode((2, Atom(""), self.sink)) + deep))
        return bytes(frame)


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


async def fuzz(node: Node, epmd_port: int, sink: Pid) -> tuple[int, int]:
    """Send FRAMES frames over as many connections as they cost; returns (frames, mutated)."""
    rng = random.Random(SEED)
    sent = mutated = 0
    while sent < FRAMES:
        us = Atom(f"{unique_name('fuzz')}@localhost")
        maker = FrameMaker(rng, node, us, sink)
        reader, writer = await open_raw(node, epmd_port)
        await handshake.connect(reader, writer, our_name=us.name, cookie=node.cookie,
                                creation=node.creation, flags=dflags.default_flags(hidden=True),
                                peer_name=node.name.name, timeout=10)
        # What the node answers (exits for links to nobody, ticks...) is read and dropped, as
        # a peer does; its end is the node closing the connection.
        closed = asyncio.ensure_future(_drain(reader))
        while sent < FRAMES and not closed.done():
            chunk = []
            broken = False
            while len(chunk) < 200 and sent < FRAMES:
                sent += 1
                if rng.random() < MUTATED_SHARE:
                    chunk.append(maker.mutated())
                    mutated += 1
                    broken = True
                    break
                chunk.append(maker.frame())
            writer.write(b"".join(chunk))
            try:
                await writer.drain()
            except ConnectionError:
                break
            if broken:  # the node closes on most of them; on to a new connection
                break
        writer.close()
        closed.cancel()
    return sent, mutated


async def _drain(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass


async def test_fuzzed_frames_leave_the_node_up_and_the_client_whole(epmd: SystemEpmd) -> None:
    async with server(epmd.port) as (node, _pipeline, collector, _producer):
        sink = node.spawn(Sink(), name="sink")
        peer = await elixir_peer(epmd.port, node)
        with peer:
            assert node.supervisor is not None
            children = await node.supervisor.which_children()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            await peer.aeval(f"PbPusher.start({receiver_ref(node)}, :legit, {LEGIT}, self())")
            sent, mutated = await fuzz(node, epmd.port, sink.pid)
            await collector.wait_for(LEGIT, timeout=120)
            grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
            assert sent >= FRAMES and mutated >= 1000
            assert sink.count > FRAMES // 5  # the frames were taken, not just dropped
            assert [n for (_label, n) in collector.data] == list(range(1, LEGIT + 1))
            assert node.running and Atom(peer.node) in node.nodes()
            assert grown_mb < 300, f"the process grew by {grown_mb:.0f} MB"
            # No system process (nor the receiver) crashed: they are the ones it started with.
            assert await node.supervisor.which_children() == children
