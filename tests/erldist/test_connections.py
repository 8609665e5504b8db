"""A peer that dials us again while we still hold its old connection (net_kernel's
``up_pending``): what is sent to it meanwhile goes over the connection that ends up live."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from pybroadway.erldist import Node, handshake
from pybroadway.erldist import control as op
from pybroadway.erldist import epmd as epmd_client
from pybroadway.erldist.flags import default_flags
from pybroadway.term import Atom, Decoder
from pybroadway.term.atoms import DOWN
from testkit.peers import SystemEpmd, unique_name
from tests.erldist.nodekit import WAIT, Mailbox, NodeEvents, python_node

SERVICE = Atom("svc")


async def _dial_as(node: Node, epmd_port: int, name: str, on_alive: Any = None
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``node`` made by hand, claiming to be ``name`` (a node that EPMD does
    not know: ``node`` cannot dial it back)."""
    address = await epmd_client.port_please(node.alive_name, epmd_port=epmd_port)
    assert address is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", address.port)
    await handshake.connect(reader, writer, our_name=name, cookie=node.cookie, creation=7,
                            flags=default_flags(hidden=True), peer_name=node.name.name,
                            timeout=WAIT, on_alive=on_alive)
    return reader, writer


async def _next_frame(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    """The next frame's control message and message (ticks skipped)."""
    while True:
        size = struct.unpack(">I", await reader.readexactly(4))[0]
        if size:
            break
    data = await reader.readexactly(size)
    assert data[0] == 112
    control, end = Decoder().decode_from(data, 1)
    return (control, Decoder().decode_from(data, end)[0]) if end < size else (control,)


async def test_what_is_sent_while_a_peer_reconnects_waits_for_its_new_connection(
        epmd: SystemEpmd) -> None:
    """The peer dials again (it dropped the old connection, which we have not noticed yet): we
    answer alive, and the old one then goes down on our side. A monitor and a message sent
    to the peer now wait for the new connection and go over it, as on the BEAM. (A second
    connection was dialled for them: here it failed, as the peer is not in EPMD, and the
    monitor ended with noconnection, the message dropped; had it succeeded, it would have
    stood beside the accepted one, whose end then went unnoticed.)"""
    async with python_node(epmd.port) as node:
        events = NodeEvents(node)
        box = node.spawn(Mailbox())
        name = f"{unique_name('raw')}@localhost"
        peer = Atom(name)
        _, old = await _dial_as(node, epmd.port, name)
        asked, answer = asyncio.Event(), asyncio.Event()

        async def on_alive(_name: str) -> bool:
            asked.set()
            await answer.wait()
            return True

        dialling = asyncio.ensure_future(_dial_as(node, epmd.port, name, on_alive))
        async with asyncio.timeout(WAIT):
            await asked.wait()
        old.close()
        await events.wait(peer, up=False)
        ref = box.monitor((SERVICE, peer))
        box.send((SERVICE, peer), "hello")
        # A node that is nowhere: its monitor ends at once, after one for the peer would have
        # (a dial to the peer fails the same way, and began first).
        nowhere = box.monitor((SERVICE, Atom(f"{unique_name('nowhere')}@localhost")))
        down = await box.receive(lambda m: m[0] is DOWN, timeout=WAIT)
        assert down[1] == nowhere, down
        answer.set()
        reader, writer = await asyncio.wait_for(dialling, WAIT)
        async with asyncio.timeout(WAIT):
            assert await _next_frame(reader) == ((op.MONITOR_P, box.pid, SERVICE, ref),)
            assert await _next_frame(reader) == ((op.REG_SEND, box.pid, Atom(""), SERVICE),
                                                 b"hello")
        assert node.connection(peer) is not None
        writer.close()
