"""What a peer sends before the cookie is checked leaves nothing behind: its node name does not
become an atom unless the handshake succeeds."""

from __future__ import annotations

import asyncio

import pytest

from pybroadway.erldist import epmd as epmd_client
from pybroadway.erldist import flags as dflags
from pybroadway.erldist import handshake
from pybroadway.erldist.node import Node
from pybroadway.term import Atom
from testkit.peers import free_port, unique_name

pytestmark = pytest.mark.timeout(30)


async def dial(node: Node, epmd_port: int, name: str, cookie: str) -> None:
    address = await epmd_client.port_please(node.alive_name, epmd_port=epmd_port)
    assert address is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", address.port)
    try:
        await handshake.connect(reader, writer, our_name=name, cookie=cookie, creation=7,
                                flags=dflags.default_flags(hidden=True),
                                peer_name=node.name.name, timeout=5)
    finally:
        writer.close()


async def test_a_name_becomes_an_atom_only_after_the_cookie_check() -> None:
    epmd_port = free_port()
    async with Node(f"{unique_name('pre')}@localhost", cookie="right",
                    epmd_port=epmd_port) as node:
        stranger = f"{unique_name('stranger')}@localhost"
        with pytest.raises(handshake.HandshakeError, match="cookie"):
            await dial(node, epmd_port, stranger, "wrong")
        assert Atom.existing(stranger) is None
        friend = f"{unique_name('friend')}@localhost"
        await dial(node, epmd_port, friend, "right")
        assert Atom.existing(friend) is not None
