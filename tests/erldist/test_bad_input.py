"""Bad input ends only the connection it came on, with a log line; the node keeps serving."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from pybroadway.erldist import epmd as epmd_client
from pybroadway.erldist import flags as dflags
from pybroadway.erldist import handshake
from pybroadway.erldist.node import Node
from pybroadway.term import Atom, Pid, Reference, encode
from testkit.peers import BeamPeer, SystemEpmd, unique_name
from tests.erldist.nodekit import WAIT, Echo, atom, ev, python_node

pytestmark = pytest.mark.timeout(60)

MAX_FRAME = 64 * 1024


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


FOREIGN = Pid(Atom("other@host"), 1, 0, 1)

BAD_FRAMES = {
    "not_pass_through": (frame(b"garbage!"), "pass-through"),
    "oversized": (struct.pack(">I", MAX_FRAME + 1) + b"\x70\x83", "max_frame_size"),
    "undecodable": (frame(b"\x70\x83\x68\x02\xff\xff\xff"), "undecodable"),
    "unknown_op": (frame(b"\x70" + encode((99, Atom("x"), Atom("y")))), "unknown control"),
    "trailing_bytes": (frame(b"\x70" + encode((2, Atom(""), Atom("x"))) + encode(1) + b"\0"),
                       "frame holds"),
    "bad_control_shape": (frame(b"\x70" + encode((1, Atom("x")))), "closing the connection"),
    # Links and monitors on behalf of another node's process: refused as the BEAM refuses
    # them (they would be kept under a node whose connection never goes).
    "foreign_link": (frame(b"\x70" + encode((1, FOREIGN, FOREIGN))), "not a process of"),
    "foreign_monitor": (frame(b"\x70" + encode((19, FOREIGN, Atom("echo"),
                                                 Reference(Atom("other@host"), 1, (1, 2, 3))))),
                        "not a process of"),
}


async def open_raw(node: Node, epmd_port: int
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = await epmd_client.port_please(node.alive_name, epmd_port=epmd_port)
    assert address is not None
    return await asyncio.open_connection("127.0.0.1", address.port)


async def assert_closed(reader: asyncio.StreamReader) -> None:
    """The node closes the connection: reading drains to EOF within WAIT."""
    async with asyncio.timeout(WAIT):
        while await reader.read(65536):
            pass


async def still_serving(node: Node, erl: BeamPeer, round_: int) -> None:
    assert await ev(erl, f"gen_server:call({{echo, {atom(node)}}}, {round_})") == \
        (Atom("echo"), round_)
    assert Atom(erl.node) in node.nodes()


async def test_garbage_before_handshake(epmd: SystemEpmd, erl_node: BeamPeer,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway")
    async with python_node(epmd.port, handshake_timeout=0.5) as node:
        node.spawn(Echo(), name="echo")
        await still_serving(node, erl_node, 0)
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x05Nxxxx", b"\xff" * 300):
            reader, writer = await open_raw(node, epmd.port)
            writer.write(junk)
            await assert_closed(reader)
            writer.close()
        # A client that connects and says nothing is dropped by the handshake timeout.
        reader, writer = await open_raw(node, epmd.port)
        await assert_closed(reader)
        writer.close()
        await still_serving(node, erl_node, 1)
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert sum("handshake" in m for m in messages) >= 4, messages


async def test_bad_frames_after_handshake(epmd: SystemEpmd, erl_node: BeamPeer,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway")
    async with python_node(epmd.port, max_frame_size=MAX_FRAME) as node:
        echo = node.spawn(Echo(), name="echo")
        await still_serving(node, erl_node, 0)
        for round_, (case, (data, expected)) in enumerate(sorted(BAD_FRAMES.items()), 1):
            caplog.clear()
            raw_name = f"{unique_name('raw')}@localhost"
            reader, writer = await open_raw(node, epmd.port)
            await handshake.connect(reader, writer, our_name=raw_name, cookie=node.cookie,
                                    creation=0x5EED, flags=dflags.default_flags(hidden=True),
                                    peer_name=node.name.name, timeout=WAIT)
            assert Atom(raw_name) in node.nodes()
            # A well-formed frame first (a plain send to echo), then the bad one.
            writer.write(frame(b"\x70" + encode((2, Atom(""), echo.pid)) + encode(case)))
            writer.write(data)
            await assert_closed(reader)
            writer.close()
            assert Atom(raw_name) not in node.nodes(), case
            await still_serving(node, erl_node, round_)
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert any(raw_name in m and expected in m for m in errors), (case, errors)
        assert echo.infos == [case.encode() for case in sorted(BAD_FRAMES)]


@pytest.mark.parametrize(("bad", "expected"), [
    (b"\x83\x68\x02\xff\xff\xff", "undecodable"),
    (encode(1) + b"\0", "frame holds"),
    (b"\x83" + b"\x6c\x00\x00\x00\x02\x61\x01", "undecodable"),  # a list cut short
], ids=["undecodable", "trailing", "short"])
async def test_a_bad_frame_in_a_run_of_like_frames(epmd: SystemEpmd, bad: bytes, expected: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Frames that repeat one control are read a run at a time: those before a bad one are
    delivered, in order; the bad one ends the connection as it does alone; none after it."""
    caplog.set_level(logging.INFO, logger="pybroadway")
    async with python_node(epmd.port) as node:
        echo = node.spawn(Echo(), name="echo")
        raw_name = f"{unique_name('raw')}@localhost"
        reader, writer = await open_raw(node, epmd.port)
        await handshake.connect(reader, writer, our_name=raw_name, cookie=node.cookie,
                                creation=0x5EED, flags=dflags.default_flags(hidden=True),
                                peer_name=node.name.name, timeout=WAIT)
        control = b"\x70" + encode((2, Atom(""), echo.pid))
        good = [frame(control + encode(i)) for i in range(200)]
        writer.write(b"".join(good[:100]) + frame(control + bad) + b"".join(good[100:]))
        await assert_closed(reader)
        writer.close()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(raw_name in m and expected in m for m in errors), errors
        assert await node.call(echo.pid, Atom("got")) == list(range(100))
