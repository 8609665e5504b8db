"""``:global`` in clusters of two BEAM nodes and the Python node, played as global.erl plays
it: the ``in_sync`` handshake when nodes learn of each other through a third."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from pybroadway.erldist import Node
from pybroadway.term import Atom, decode
from testkit.peers import BeamPeer, SystemEpmd, unique_name

pytestmark = pytest.mark.timeout(300)

ROUNDS = 50

# global:sync() on the BEAM, bounded: the point is that it returns within 2 s.
BEAM_SYNC_2S = ("Self = self(), spawn(fun() -> Self ! {synced, global:sync()} end), "
                "receive {synced, R} -> R after 2000 -> sync_timeout end")


async def ev(peer: BeamPeer, expr: str) -> object:
    return decode(await peer.aeval(expr))


@pytest.fixture
async def cluster(epmd: SystemEpmd, otp: str) -> AsyncIterator[tuple[BeamPeer, BeamPeer, Node]]:
    with BeamPeer.erlang(otp, epmd_port=epmd.port) as a, \
            BeamPeer.erlang(otp, epmd_port=epmd.port) as b:
        await asyncio.gather(asyncio.to_thread(a.wait_started), asyncio.to_thread(b.wait_started))
        async with Node(unique_name("py") + "@localhost", cookie="pybroadway",
                        epmd_port=epmd.port) as py:
            yield a, b, py


async def all_apart(a: BeamPeer, b: BeamPeer, py: Node) -> None:
    """Every node drops every connection, until each has seen itself alone twice, 0.2 s
    apart: global may still be finishing what the last round started (a sync_other process
    connects again), and the next round must start as a first connect does."""
    deadline = time.monotonic() + 10
    apart_since = None
    while True:
        for peer in (a, b):
            await ev(peer, "[erlang:disconnect_node(N) || N <- nodes(connected)], ok")
        for node in py.nodes():
            py.disconnect(node)
        alone = [await ev(peer, "nodes(connected)") == [] for peer in (a, b)]
        if all(alone) and not py.nodes():
            if apart_since is not None and time.monotonic() - apart_since >= 0.2:
                return
            apart_since = apart_since or time.monotonic()
        else:
            apart_since = None
        assert time.monotonic() < deadline, "the nodes did not come apart"
        await asyncio.sleep(0.05)  # no event tells when another node's view settles


async def test_first_connects_sync_within_2s(
        cluster: tuple[BeamPeer, BeamPeer, Node]) -> None:
    """a, b and Python connect to each other at once, as a cluster that starts does. Python
    may get b's in_sync (b learned of Python through a) before a's new_nodes naming b; it must
    still answer b with its own in_sync, which b waits for (global.erl counts b as synced, not
    as known, on in_sync)."""
    a, b, py = cluster
    slow = []
    for round_ in range(ROUNDS):
        await asyncio.gather(
            ev(a, f"net_kernel:connect_node('{py.name.name}')"),
            ev(b, f"net_kernel:connect_node('{py.name.name}')"),
            ev(a, f"net_kernel:connect_node('{b.node}')"))
        for peer, answer in zip((a, b), await asyncio.gather(ev(a, BEAM_SYNC_2S),
                                                           ev(b, BEAM_SYNC_2S)), strict=True):
            if answer is not Atom("ok"):
                slow.append((round_, peer.node))
        await all_apart(a, b, py)
    assert slow == []
