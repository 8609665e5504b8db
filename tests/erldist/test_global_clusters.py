"""``:global`` in clusters of BEAM and Python nodes, played as global.erl plays it: the
``in_sync`` handshake when nodes learn of each other through a third, and many nodes joining
one hub at the same moment (each then connects to all the others at once)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from pybroadway.erldist import Node, global_names
from pybroadway.term import Atom, decode
from testkit.peers import BeamPeer, SystemEpmd, unique_name
from testkit.wait import eventually_async
from tests.erldist.nodekit import Echo

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


async def all_apart(beams: list[BeamPeer], pys: list[Node]) -> None:
    """Every node drops every connection, until each has seen itself alone twice, 0.2 s
    apart: global may still be finishing what the last round started (a sync_other process
    connects again), and the next round must start as a first connect does."""
    deadline = time.monotonic() + 10
    apart_since = None
    while True:
        for peer in beams:
            await ev(peer, "[erlang:disconnect_node(N) || N <- nodes(connected)], ok")
        for py in pys:
            for node in py.nodes():
                py.disconnect(node)
        alone = [await ev(peer, "nodes(connected)") == [] for peer in beams]
        if all(alone) and not any(py.nodes() for py in pys):
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
        await all_apart([a, b], [py])
    assert slow == []


JOIN_ROUNDS = 5


@pytest.fixture
async def many(epmd: SystemEpmd, otp: str) -> AsyncIterator[tuple[list[BeamPeer], list[Node]]]:
    """Two BEAM nodes and four Python nodes, each holding a global name of its own."""
    beams = [BeamPeer.erlang(otp, epmd_port=epmd.port) for _ in range(2)]
    try:
        await asyncio.gather(*(asyncio.to_thread(peer.wait_started) for peer in beams))
        async with contextlib.AsyncExitStack() as stack:
            pys = [await stack.enter_async_context(
                Node(unique_name("py") + "@localhost", cookie="pybroadway",
                     epmd_port=epmd.port)) for _ in range(4)]
            for peer in beams:
                await ev(peer, "P = spawn(fun() -> receive stop -> ok end end), "
                               "yes = global:register_name(node(), P)")
            for py in pys:
                assert await global_names.register_name(py, py.name, py.spawn(Echo()).pid)
            yield beams, pys
    finally:
        for peer in beams:
            peer.kill()


@pytest.mark.parametrize("names", [False, True], ids=["mesh", "names"])
@pytest.mark.parametrize("hub", ["python", "beam"])
async def test_nodes_joining_a_hub_at_once_end_fully_connected(
        hub: str, names: bool, many: tuple[list[BeamPeer], list[Node]]) -> None:
    """Everyone connects to one hub at the same moment, as workers join their front: global
    then has each connect to every other at once, pairs of nodes dialling each other at the
    same time. An all-BEAM cluster ends fully connected, every node with every name, and no
    connection is ever dropped on the way (dist_util's simultaneous-connect rules leave one
    connection per pair; a dropped one would set off partition prevention); so must this
    (with ``names``, also every name on every node)."""
    beams, pys = many
    everyone = {Atom(peer.node) for peer in beams} | {py.name for py in pys}
    hub_name = pys[0].name if hub == "python" else Atom(beams[0].node)
    downs: list[tuple[Atom, Atom]] = []
    for py in pys:
        py.monitor_nodes(lambda peer, up, py=py: None if up else downs.append((py.name, peer)))

    async def views() -> dict[Atom, tuple[set[Atom], set[Atom]]]:
        seen = {}
        for peer in beams:
            nodes, names = decode(await peer.aeval("{nodes(), global:registered_names()}"))
            seen[Atom(peer.node)] = (set(nodes), set(names))
        for py in pys:
            seen[py.name] = (set(py.nodes()), set(global_names.registered_names(py)))
        return seen

    last: dict[Atom, tuple[set[Atom], set[Atom]]] = {}

    async def full_mesh() -> bool:
        last.update(await views())
        return all(nodes == everyone - {node} and (seen == everyone or not names)
                   for node, (nodes, seen) in last.items())

    def missing() -> str:
        return "; ".join(f"{node.name} lacks nodes {sorted(everyone - nodes - {node})} "
                         f"names {sorted(everyone - seen)}"
                         for node, (nodes, seen) in last.items()
                         if nodes != everyone - {node} or seen != everyone)

    for round_ in range(JOIN_ROUNDS):
        downs.clear()
        await asyncio.gather(
            *(py.connect(hub_name) for py in pys if py.name is not hub_name),
            *(ev(peer, f"net_kernel:connect_node('{hub_name.name}')") for peer in beams
              if peer.node != hub_name.name))
        await eventually_async(full_mesh, timeout=15,
                               what=lambda n=round_: f"round {n}: a full mesh; dropped "
                                                     f"{downs}; {missing()}")
        assert downs == [], f"round {round_}: connections dropped on the way"
        await all_apart(beams, pys)


async def test_a_lock_waits_for_a_late_answer_as_global_does(
        cluster: tuple[BeamPeer, BeamPeer, Node]) -> None:
    """a, in Python's partition, has its global suspended while b joins Python: Python's
    locker needs a's lock for the merge, and a set_lock left unanswered fails the attempt
    (retried later) and is deleted again, never taken as granted. Taking it as granted after
    5 s let b's names in while a was unlocked."""
    a, b, py = cluster
    name = unique_name("late")
    assert await ev(a, f"net_kernel:connect_node('{py.name.name}')") is True
    assert await ev(a, "global:sync()") == Atom("ok")
    await global_names.sync(py)
    await ev(b, f"P = spawn(fun() -> receive stop -> ok end end), "
                f"yes = global:register_name({name}, P)")
    await ev(a, "sys:suspend(global_name_server)")
    try:
        assert await ev(b, f"net_kernel:connect_node('{py.name.name}')") is True
        # the lock calls give up after 5 s: past that, the merge must still be waiting
        await asyncio.sleep(6.5)
        assert global_names.whereis_name(py, name) is None
    finally:
        await ev(a, "sys:resume(global_name_server)")
    await eventually_async(lambda: global_names.whereis_name(py, name) is not None, timeout=10)
    # a took part in the merge, and every lock set on it was deleted again
    await eventually_async(lambda: _on_a(a, f"global:whereis_name({name}) =/= undefined"),
                           timeout=10)
    await eventually_async(lambda: _on_a(a, "ets:tab2list(global_locks) =:= []"), timeout=10)


async def _on_a(peer: BeamPeer, test: str) -> bool:
    return await ev(peer, test) is True
