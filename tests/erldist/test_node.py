"""Node-level interop: connecting both ways, ping, cookies, a killed peer, a restarted node,
and two Python nodes with no Erlang at all."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pybroadway.erldist import CallError, Node
from pybroadway.errors import StateError
from pybroadway.term import Atom, Pid
from testkit.peers import BeamPeer, SystemEpmd, free_port, unique_name
from testkit.wait import eventually_async
from tests.erldist.nodekit import WAIT, Echo, Mailbox, NodeEvents, atom, ev, python_node, started

pytestmark = pytest.mark.timeout(60)


async def test_elixir_connects_to_python_and_python_to_elixir(epmd: SystemEpmd) -> None:
    async with started(BeamPeer.elixir(epmd_port=epmd.port)) as ex, \
            python_node(epmd.port) as node:
        events = NodeEvents(node)
        assert await ev(ex, f"Node.connect(:{atom(node)})") is True
        await events.wait(ex.node, up=True)

        async def listed() -> bool:  # the BEAM marks the node up after connect returns
            return Atom(node.name.name) in await ev(ex, "Node.list()")
        await eventually_async(listed, timeout=WAIT)
        assert Atom(node.name.name) in await ev(ex, "Node.list()")
        assert await ev(ex, f"Node.ping(:{atom(node)})") == Atom("pong")
        assert await ev(ex, f"Node.disconnect(:{atom(node)})") is True
        await events.wait(ex.node, up=False)
        assert node.nodes() == []
        # …and the other way round.
        assert await node.connect(ex.node)
        assert Atom(ex.node) in node.nodes()
        await eventually_async(listed, timeout=WAIT)
        assert Atom(node.name.name) in await ev(ex, "Node.list()")


async def test_erlang_ping_and_python_connects(epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        assert await ev(erl_node, f"net_adm:ping({atom(node)})") == Atom("pong")
        assert await ev(erl_node, "nodes()") == [node.name]
        assert node.disconnect(erl_node.node)
        assert await node.connect(erl_node.node)
        assert node.nodes() == [Atom(erl_node.node)]
        assert await ev(erl_node, "nodes()") == [node.name]


async def test_wrong_cookie_is_refused_both_ways(epmd: SystemEpmd, otp: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway")
    peer = BeamPeer.erlang(otp, epmd_port=epmd.port, cookie="not-the-cookie")
    async with started(peer) as erl, python_node(epmd.port) as node:
        # The BEAM dials Python: refused, and Python's log says who it was.
        assert await ev(erl, f"net_kernel:connect_node({atom(node)})") is False
        assert node.nodes() == []
        refused = [r for r in caplog.records if r.levelno >= logging.WARNING
                   and erl.node in r.getMessage()]
        assert refused, [r.getMessage() for r in caplog.records]
        caplog.clear()
        # Python dials the BEAM: refused too, logged with the peer's name.
        assert await node.connect(erl.node) is False
        assert node.nodes() == []
        assert any(r.levelno >= logging.WARNING and erl.node in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        # (No more requests to the peer: OTP 28 prints the refused handshake's error report on
        # stdout, which is the test driver's channel.)


async def test_killed_peer_gives_nodedown_and_noconnection(epmd: SystemEpmd, otp: str) -> None:
    peer = BeamPeer.erlang(otp, epmd_port=epmd.port, extra=["-kernel", "net_ticktime", "4"])
    async with started(peer) as erl, python_node(epmd.port, ticktime=4) as node:
        events = NodeEvents(node)
        remote = await ev(erl, "P = spawn(fun() -> receive _ -> ok end end), P")
        assert isinstance(remote, Pid)
        linked = node.spawn(Mailbox(trap_exit=True))
        linked.link(remote)
        ref = linked.monitor(remote)
        await events.wait(erl.node, up=True)
        await asyncio.to_thread(erl.kill)  # SIGKILL
        async with asyncio.timeout(4):
            await events.wait(erl.node, up=False)
            signals = {await linked.receive(timeout=4), await linked.receive(timeout=4)}
        assert signals == {(Atom("EXIT"), remote, Atom("noconnection")),
                           (Atom("DOWN"), ref, Atom("process"), remote, Atom("noconnection"))}
        with pytest.raises(CallError) as info:
            await node.call(("rex", erl.node), Atom("x"), timeout=WAIT)
        assert info.value.reason in (Atom("noconnection"), Atom("noproc"))


async def test_silent_peer_is_dropped_after_ticktime(epmd: SystemEpmd) -> None:
    """A peer that stops answering (SIGSTOP) is dropped by the tick timeout."""
    import os
    import signal
    peer = BeamPeer.erlang("25", epmd_port=epmd.port, extra=["-kernel", "net_ticktime", "4"])
    async with started(peer) as erl, python_node(epmd.port, ticktime=2) as node:
        events = NodeEvents(node)
        assert await ev(erl, f"net_adm:ping({atom(node)})") == Atom("pong")
        os.kill(erl.proc.pid, signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            began = loop.time()
            await events.wait(erl.node, up=False, timeout=6)
            assert 1.0 < loop.time() - began < 4.0
        finally:
            os.kill(erl.proc.pid, signal.SIGCONT)


async def test_restarted_node_gets_new_creation_and_old_pids_are_stale(
        epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    name = unique_name("py")
    py = f"'{name}@localhost'"
    async with python_node(epmd.port, name=name) as first:
        first.spawn(Echo(), name="keeper")
        old = await ev(erl_node, f"Old = gen_server:call({{keeper, {py}}}, pid), Old")
        old_creation = first.creation
    async with python_node(epmd.port, name=name) as second:
        keeper = second.spawn(Echo(), name="keeper")
        assert second.creation != old_creation
        assert keeper.pid.id == old.id and keeper.pid != old
        got = await ev(erl_node, f"Old ! to_old, New = gen_server:call({{keeper, {py}}}, pid), "
                                 f"New ! to_new, {{New =:= Old, gen_server:call(New, got)}}")
        assert got == (False, [Atom("to_new")])


async def test_two_python_nodes_with_embedded_epmd() -> None:
    port = free_port()  # nothing listens: the first node starts an embedded epmd there
    async with python_node(port) as a, python_node(port) as b:
        a.spawn(Echo(), name="echo")
        sink = b.spawn(Echo(), name="sink")
        events = NodeEvents(a)
        assert await b.call(("echo", a.name), [1, "two"], timeout=WAIT) == \
            (Atom("echo"), [1, b"two"])
        await events.wait(b.name, up=True)
        assert a.nodes() == [b.name] and b.nodes() == [a.name]
        a.cast(("sink", b.name), Atom("hello"))
        await asyncio.wait_for(sink.cast_event.wait(), WAIT)
        assert sink.casts == [Atom("hello")]
        with pytest.raises(CallError) as info:
            await a.call(("missing", b.name), 1, timeout=WAIT)
        assert info.value.reason == Atom("noproc")
    # Both are gone, the embedded epmd with them: a fresh node takes the port again, and stops
    # even when its processes had no chance to run before the stop.
    async with asyncio.timeout(WAIT), python_node(port):
        pass


async def test_process_exited_before_it_ran() -> None:
    """An exit signal that arrives before a new process first runs still ends it properly."""
    async with python_node(free_port()) as node:
        trapper = node.spawn(Mailbox(trap_exit=True))
        doomed = node.spawn(Mailbox(), link=trapper.pid)
        doomed.exit(Atom("early"))
        assert await asyncio.wait_for(doomed.wait(), WAIT) == Atom("early")
        assert await trapper.receive(timeout=WAIT) == (Atom("EXIT"), doomed.pid, Atom("early"))
        assert node.process(doomed.pid) is None


async def test_simultaneous_connect(epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    """Both sides dial at once, several times: one connection survives and works."""
    for _ in range(5):
        async with python_node(epmd.port) as node:
            node.spawn(Echo(), name="echo")
            ours, theirs = await asyncio.gather(
                node.connect(erl_node.node),
                ev(erl_node, f"net_kernel:connect_node({atom(node)})"))
            assert ours is True and theirs is True
            assert await ev(erl_node, f"gen_server:call({{echo, {atom(node)}}}, x)") == \
                (Atom("echo"), Atom("x"))
            assert node.nodes() == [Atom(erl_node.node)]
            assert await node.call(("net_kernel", erl_node.node),
                                   (Atom("is_auth"), node.name), timeout=WAIT) == Atom("yes")


async def test_unreachable_node(epmd: SystemEpmd) -> None:
    """Signals to a node that is not there fail as on a lost connection, without waiting."""
    async with python_node(epmd.port, connect_timeout=WAIT) as node:
        ghost = f"{unique_name('ghost')}@localhost"
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(CallError) as info:
            await node.call(("anything", ghost), Atom("x"), timeout=WAIT)
        assert info.value.reason == Atom("noconnection")
        watcher = node.spawn(Mailbox(trap_exit=True))
        ghost_pid = Pid(Atom(ghost), 1, 0, 1)
        ref = watcher.monitor(ghost_pid)
        assert await watcher.receive(timeout=WAIT) == \
            (Atom("DOWN"), ref, Atom("process"), ghost_pid, Atom("noconnection"))
        watcher.link(ghost_pid)
        assert await watcher.receive(timeout=WAIT) == \
            (Atom("EXIT"), ghost_pid, Atom("noconnection"))
        assert loop.time() - began < 2.0
        assert not await node.connect(ghost)


async def test_long_names(epmd: SystemEpmd, otp: str) -> None:
    """A node named name@127.0.0.1 talks with an `erl -name` node both ways."""
    beam_name = unique_name("long")
    peer = BeamPeer.erlang(otp, epmd_port=epmd.port, distributed=False, extra=[
        "-name", f"{beam_name}@127.0.0.1", "-setcookie", "pybroadway", "-start_epmd", "false"])
    async with python_node(epmd.port, name=f"{unique_name('pylong')}@127.0.0.1") as node, \
            started(peer):
        node.spawn(Echo(), name="echo")
        assert await ev(peer, f"gen_server:call({{echo, {atom(node)}}}, hi)") == (
            Atom("echo"), Atom("hi"))
        assert await node.connect(f"{beam_name}@127.0.0.1")
        assert await node.call(("net_kernel", f"{beam_name}@127.0.0.1"),
                               (Atom("is_auth"), node.name)) == Atom("yes")


async def test_a_node_not_started_does_not_connect() -> None:
    """Before start a node's connections have no settings (its cookie is not read yet, EPMD
    gave it no creation): a connect says so instead of dialling as nobody."""
    node = Node(unique_name("py") + "@localhost")
    with pytest.raises(StateError):
        await node.connect("nobody@localhost", check=True)
