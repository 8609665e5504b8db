"""Overlapping partitions are prevented as an all-BEAM cluster prevents them: after a dropped
connection, a cluster of two BEAM nodes and the Python node ends as the same cluster with a third
BEAM node in the Python node's place may end — split into partitions that do not overlap, the
two nodes of the dropped connection apart, each node seeing the global names of its partition
and no others (which of the possible splits comes depends on which lost_connection message
arrives first, in the all-BEAM cluster too); after a heal, all agree again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pybroadway.erldist import Node, global_names
from pybroadway.term import Atom, decode
from testkit.peers import BeamPeer, SystemEpmd, unique_name
from tests.erldist.nodekit import Echo

pytestmark = pytest.mark.timeout(240)

ROLES = ("a", "b", "x")


class BeamMember:
    """A BEAM node as a cluster member."""

    def __init__(self, peer: BeamPeer) -> None:
        self.peer = peer
        self.name = Atom(peer.node)

    async def ev(self, expr: str) -> Any:
        return decode(await self.peer.aeval(expr))

    async def connect(self, other: Atom) -> None:
        assert await self.ev(f"net_kernel:connect_node('{other.name}')") is True

    async def disconnect(self, other: Atom) -> None:
        await self.ev(f"erlang:disconnect_node('{other.name}')")

    async def register(self, name: str) -> None:
        await self.ev(f"P = spawn(fun() -> receive stop -> ok end end), "
                      f"yes = global:register_name({name}, P)")

    async def sync(self) -> None:
        assert await self.ev("global:sync()") == Atom("ok")

    async def state(self) -> tuple[set[Atom], set[str]]:
        nodes, names = await self.ev("{nodes(), global:registered_names()}")
        return set(nodes), {n.name for n in names}


class PythonMember:
    """The Python node as a cluster member."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.name = node.name

    async def connect(self, other: Atom) -> None:
        assert await self.node.connect(other)

    async def disconnect(self, other: Atom) -> None:
        self.node.disconnect(other)

    async def register(self, name: str) -> None:
        assert await global_names.register_name(self.node, name, self.node.spawn(Echo()).pid)

    async def sync(self) -> None:
        await global_names.sync(self.node, timeout=10)

    async def state(self) -> tuple[set[Atom], set[str]]:
        names = global_names.registered_names(self.node)
        return set(self.node.nodes()), {n.name for n in names}


Member = BeamMember | PythonMember


async def form(members: dict[str, Member]) -> None:
    """Connect everyone to everyone, register one name each, and sync."""
    a, b, x = (members[r] for r in ROLES)
    await a.connect(b.name)
    await a.connect(x.name)
    await b.connect(x.name)
    for member in members.values():
        await member.sync()


View = dict[str, tuple[frozenset[str], frozenset[str]]]


async def roles_view(members: dict[str, Member]) -> View:
    """Each role's connected roles and the global names it sees."""
    by_name = {m.name: role for role, m in members.items()}
    view = {}
    for role, member in members.items():
        nodes, names = await member.state()
        view[role] = (frozenset(by_name[n] for n in nodes if n in by_name), frozenset(names))
    return view


async def settled(members: dict[str, Member]) -> View:
    """The cluster's view once it has stopped changing for a second (no event says when the
    nodes are done dropping connections)."""
    deadline = time.monotonic() + 20
    last, since = None, time.monotonic()
    while True:
        view = await roles_view(members)
        if view != last:
            last, since = view, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            return view
        assert time.monotonic() < deadline, f"the cluster kept changing: {view}"
        await asyncio.sleep(0.1)


Drop = Callable[[dict[str, Member]], Awaitable[None]]


async def beam_drops_beam(m: dict[str, Member]) -> None:
    await m["a"].disconnect(m["b"].name)


async def beam_drops_x(m: dict[str, Member]) -> None:
    await m["a"].disconnect(m["x"].name)


async def x_drops_beam(m: dict[str, Member]) -> None:
    await m["x"].disconnect(m["a"].name)


DROPS: dict[str, tuple[Drop, tuple[str, str]]] = {
    "beam drops beam": (beam_drops_beam, ("a", "b")),
    "beam drops x": (beam_drops_x, ("a", "x")),
    "x drops beam": (x_drops_beam, ("x", "a")),
}


def overlaps(view: View, dropped: tuple[str, str]) -> list[str]:
    """What is wrong with ``view`` after ``dropped`` went down: empty if the cluster is split
    into partitions that do not overlap, with the two apart and each node seeing the global
    names of its own partition only."""
    wrong = []
    for role, (peers, names) in view.items():
        partition = peers | {role}
        for peer in peers:
            if view[peer][0] | {peer} != partition:
                wrong.append(f"{role} and {peer} are connected to different nodes: overlap")
        if names != {f"{member}name" for member in partition}:
            wrong.append(f"{role} sees {sorted(names)} in the partition {sorted(partition)}")
    if dropped[1] in view[dropped[0]][0]:
        wrong.append(f"{dropped[0]} and {dropped[1]} are still connected")
    return wrong


@pytest.fixture
async def clusters(epmd: SystemEpmd, otp: str) -> AsyncIterator[tuple[dict[str, Member],
                                                                    dict[str, Member]]]:
    peers = [BeamPeer.erlang(otp, epmd_port=epmd.port) for _ in range(5)]
    try:
        await asyncio.gather(*(asyncio.to_thread(p.wait_started) for p in peers))
        async with Node(f"{unique_name('py')}@localhost", cookie="pybroadway",
                        epmd_port=epmd.port) as node:
            reference = dict(zip(ROLES, map(BeamMember, peers[:3]), strict=True))
            ours: dict[str, Member] = {"a": BeamMember(peers[3]), "b": BeamMember(peers[4]),
                                       "x": PythonMember(node)}
            for cluster in (reference, ours):
                for role, member in cluster.items():
                    await member.register(f"{role}name")
                await form(cluster)
            yield reference, ours
    finally:
        for peer in peers:
            peer.kill()


async def test_drops_end_as_in_an_all_beam_cluster_and_heal(
        clusters: tuple[dict[str, Member], dict[str, Member]]) -> None:
    reference, ours = clusters
    everything = {r: (frozenset(set(ROLES) - {r}), frozenset(f"{x}name" for x in ROLES))
                  for r in ROLES}
    for what, (drop, dropped) in DROPS.items():
        for cluster in (reference, ours):
            assert await settled(cluster) == everything, what
        await drop(reference)
        await drop(ours)
        reached, got = await settled(reference), await settled(ours)
        assert overlaps(reached, dropped) == [], (what, reached)  # the rule, as the BEAM keeps it
        assert overlaps(got, dropped) == [], (what, got)
        for cluster in (reference, ours):
            await form(cluster)  # the heal
