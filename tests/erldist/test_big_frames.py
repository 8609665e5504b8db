"""Big and costly frames: decoded off the event loop so the other connections go on, and a
compressed term may not inflate past the node's max_inflated."""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
import zlib

import pytest

from pybroadway.erldist import flags as dflags
from pybroadway.erldist import handshake
from pybroadway.erldist.node import Node
from pybroadway.term import Atom, encode
from testkit.peers import BeamPeer, SystemEpmd, unique_name
from testkit.wait import eventually_async
from tests.erldist.nodekit import Echo, atom, ev, python_node
from tests.erldist.test_bad_input import assert_closed, frame, open_raw

pytestmark = pytest.mark.timeout(60)


async def raw_peer(node: Node, epmd_port: int) -> tuple[asyncio.StreamReader,
                                                        asyncio.StreamWriter]:
    reader, writer = await open_raw(node, epmd_port)
    await handshake.connect(reader, writer, our_name=f"{unique_name('raw')}@localhost",
                            cookie=node.cookie, creation=0x5EED,
                            flags=dflags.default_flags(hidden=True), peer_name=node.name.name,
                            timeout=10)
    return reader, writer


def send_to(pid: object, message_ext: bytes) -> bytes:
    """A SEND frame whose message is given already encoded (version byte included)."""
    return frame(b"\x70" + encode((2, Atom(""), pid)) + message_ext)


async def test_a_big_frame_does_not_hold_up_other_connections(
        epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    """While a 3 MiB frame of small tuples decodes (seconds of work), a call from another node
    is answered: the big message reaches the process after the call's."""
    async with python_node(epmd.port) as node:
        echo = node.spawn(Echo(), name="echo")
        assert await ev(erl_node, f"gen_server:call({{echo, {atom(node)}}}, warm)") == \
            (Atom("echo"), Atom("warm"))
        _reader, writer = await raw_peer(node, epmd.port)
        count = 1_000_000
        big = b"\x83l" + struct.pack(">I", count) + b"h\x01j" * count + b"j"
        writer.write(send_to(echo.pid, big))
        await writer.drain()
        # Once the frame is read, it is decoded in a thread of its own; meanwhile the loop
        # serves the BEAM's connection.
        await eventually_async(lambda: any(t.name.startswith("dist-decode-")
                                           for t in threading.enumerate()), timeout=10)
        await ev(erl_node, f"{{echo, {atom(node)}}} ! during, ok")
        await eventually_async(lambda: len(echo.infos) == 2, timeout=30)
        assert echo.infos[0] == Atom("during")
        assert len(echo.infos[1]) == count
        writer.close()


async def test_a_compressed_term_may_not_inflate_past_max_inflated(
        epmd: SystemEpmd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pybroadway")
    async with python_node(epmd.port, max_inflated=1 << 20) as node:
        echo = node.spawn(Echo(), name="echo")
        # 2 MiB of empty lists compress to about 2 KiB: a bomb, refused before it is built.
        body = b"l" + struct.pack(">I", 2 << 20) + b"j" * (2 << 20) + b"j"
        bomb = b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body, 9)
        assert len(bomb) < 4096
        reader, writer = await raw_peer(node, epmd.port)
        writer.write(send_to(echo.pid, bomb))
        await assert_closed(reader)
        writer.close()
        assert any("max_inflated" in r.getMessage() for r in caplog.records)
        # Within the limit, the same shape is taken.
        body = b"l" + struct.pack(">I", 1000) + b"j" * 1000 + b"j"
        small = b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body, 9)
        reader, writer = await raw_peer(node, epmd.port)
        writer.write(send_to(echo.pid, small))
        await writer.drain()
        await eventually_async(lambda: echo.infos)
        assert echo.infos == [[[]] * 1000]
        writer.close()
