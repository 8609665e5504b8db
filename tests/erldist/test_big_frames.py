"""Big and costly frames: decoded off the event loop so the other connections go on, and a
compressed term may not inflate past the node's max_inflated."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
import threading
import zlib
from pathlib import Path

import pytest

from pybroadway.erldist import epmd as epmd_client
from pybroadway.erldist import flags as dflags
from pybroadway.erldist import handshake
from pybroadway.erldist.node import Node
from pybroadway.term import Atom, Pid, Reference, encode
from testkit.peers import BeamPeer, SystemEpmd, unique_name
from testkit.wait import eventually_async
from tests.erldist.nodekit import Echo, atom, ev, python_node
from tests.erldist.test_bad_input import assert_closed, frame, open_raw
from tests.otp_distribution.test_server_cli import COOKIE, running

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


def peak_kb(pid: int) -> int:
    """A process's peak resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.beam  # with Erlang's test helpers; it needs none itself
async def test_no_frame_of_one_mib_costs_a_server_100_mb() -> None:
    """The costliest frames of at most 1 MiB (a list of a million empty lists; a compressed
    term that would inflate to four million) raise a running server's peak memory by less
    than 100 MB."""
    count = (1 << 20) - 64
    nils = b"\x83l" + struct.pack(">I", count) + b"j" * count + b"j"
    body = b"l" + struct.pack(">I", 4 << 20) + b"j" * (4 << 20) + b"j"
    bomb = b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body, 9)
    with running([sys.executable, "-m", "pybroadway", "serve", "--quiet"]) as server:
        server.wait_logged(" serves off_broadway_otp_distribution_receiver")
        alive = server.sname.split("@")[0]
        address = await epmd_client.port_please(alive, epmd_port=server.epmd_port)
        assert address is not None
        for message in (nils, bomb):
            reader, writer = await asyncio.open_connection("127.0.0.1", address.port)
            us = Atom(f"{unique_name('bomber')}@localhost")
            await handshake.connect(reader, writer, our_name=us.name, cookie=COOKIE,
                                    creation=7, flags=dflags.default_flags(hidden=True),
                                    peer_name=server.sname, timeout=10)
            me = Pid(us, 1, 0, 7)
            to_net_kernel = encode((6, me, Atom(""), Atom("net_kernel")))
            before = peak_kb(server.proc.pid)
            writer.write(frame(b"\x70" + to_net_kernel + message))
            # net_kernel answers this only after the big frame (one connection keeps order).
            writer.write(frame(b"\x70" + to_net_kernel + encode(
                (Atom("$gen_call"), (me, Reference(us, 7, (1, 2, 3))), (Atom("is_auth"), us)))))
            with contextlib.suppress(ConnectionError):  # the bomb is refused: reset
                await writer.drain()
                await asyncio.wait_for(reader.read(65536), 30)  # its answer, or the close
            grown_mb = (peak_kb(server.proc.pid) - before) / 1024
            assert grown_mb < 100, f"a {len(message)}-byte term cost {grown_mb:.0f} MB"
            writer.close()
        server.stop()
