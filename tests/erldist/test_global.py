"""``:global`` between a Python node and real OTP 25 / 28 and Elixir 1.14 nodes."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from pybroadway.erldist import GenServer, Node, global_names
from pybroadway.erldist.genserver import From
from pybroadway.erldist.global_names.requester import NO_ANSWER, Requester
from pybroadway.term import Atom, Pid, decode
from testkit.peers import BeamPeer, SystemEpmd, unique_name
from testkit.wait import eventually_async
from tests.erldist.nodekit import WAIT


class Echo(GenServer):
    """Answers every call with ``{echo, Request}``."""

    def handle_call(self, request: object, from_: From) -> object:
        return (Atom("echo"), request)



# global:sync() on the BEAM, bounded so that a failure cannot hang the test
BEAM_SYNC = ("Self = self(), spawn(fun() -> Self ! {synced, global:sync()} end), "
             "receive {synced, R} -> R after 4000 -> sync_timeout end")


async def ev(peer: BeamPeer, expr: str) -> object:
    return decode(await peer.aeval(expr))


async def connect_and_sync(peer: BeamPeer, py: Node) -> float:
    """The BEAM connects to Python and runs ``global:sync()``; returns how long it took."""
    assert await ev(peer, f"net_kernel:connect_node('{py.name.name}')") is True
    start = time.monotonic()
    assert await ev(peer, BEAM_SYNC) is Atom("ok")
    return time.monotonic() - start


async def test_python_name_visible_after_connect(beam: BeamPeer, py: Node) -> None:
    echo = py.spawn(Echo())
    assert await global_names.register_name(py, "py_echo", echo.pid)
    assert await connect_and_sync(beam, py) < 2.0
    assert await ev(beam, "global:whereis_name(py_echo)") == echo.pid
    assert await ev(beam, "gen_server:call({global, py_echo}, hi)") == (Atom("echo"),
                                                                       Atom("hi"))
    await global_names.sync(py, timeout=2)
    # the process dies: the name goes away everywhere
    echo.exit(Atom("shutdown"))
    await echo.wait()

    async def gone_on_the_beam() -> bool:  # another node's table: no event to wait for
        return await ev(beam, "global:whereis_name(py_echo)") is Atom("undefined")
    await eventually_async(gone_on_the_beam)
    assert await ev(beam, "global:whereis_name(py_echo)") is Atom("undefined")
    assert global_names.whereis_name(py, "py_echo") is None


async def test_python_registers_after_connect(beam: BeamPeer, py: Node) -> None:
    assert await connect_and_sync(beam, py) < 2.0
    echo = py.spawn(Echo())
    # right after the connect the connect lock is often still held: register retries
    assert await global_names.register_name(py, "late_echo", echo.pid, timeout=10)
    assert await ev(beam, "global:whereis_name(late_echo)") == echo.pid
    assert not await global_names.register_name(py, "late_echo", echo.pid)
    await global_names.unregister_name(py, "late_echo")
    assert await ev(beam, "global:whereis_name(late_echo)") is Atom("undefined")


async def test_beam_names_seen_by_python(beam: BeamPeer, py: Node) -> None:
    before = await ev(beam, "P1 = spawn(fun() -> receive _ -> ok end end), "
                            "yes = global:register_name(beam_before, P1), P1")
    await connect_and_sync(beam, py)
    await global_names.sync(py, timeout=2)
    assert global_names.whereis_name(py, "beam_before") == before
    after = await ev(beam, "P2 = spawn(fun() -> receive _ -> ok end end), "
                           "yes = global:register_name(beam_after, P2), P2")
    assert global_names.whereis_name(py, "beam_after") == after
    assert await ev(beam, "global:trans({res, self()}, fun() -> done end)") is Atom("done")
    assert set(global_names.registered_names(py)) >= {Atom("beam_before"), Atom("beam_after")}
    await ev(beam, "exit(P2, kill), global:unregister_name(beam_before)")
    await eventually_async(lambda: global_names.whereis_name(py, "beam_after") is None)
    assert global_names.whereis_name(py, "beam_before") is None


async def test_calls_from_two_tasks_of_one_requester_both_get_their_reply(
        beam: BeamPeer, py: Node) -> None:
    """global's locker calls from a lock attempt while a release's del_lock calls still wait
    for their replies, all from its one pid: every call gets the BEAM's reply (the call that
    began waiting first lost its wake-up to the other and waited forever)."""
    requester = py.spawn(Requester())
    peer = Atom(beam.node)
    replies = await asyncio.gather(
        requester.multi_call([peer], Atom("get_known"), WAIT),
        requester.multi_call([peer], Atom("get_known"), WAIT))
    assert [reply[peer] is not NO_ANSWER for reply in replies] == [True, True]


async def test_remove_connection_is_obeyed(beam: BeamPeer, py: Node) -> None:
    await connect_and_sync(beam, py)
    down = asyncio.get_running_loop().create_future()
    py.monitor_nodes(lambda n, up: None if up or down.done() else down.set_result(n))
    await ev(beam, f"{{global_name_server, '{py.name.name}'}} ! "
                   f"{{remove_connection, node()}}")
    assert await asyncio.wait_for(down, 5) == Atom(beam.node)
    assert await ev(beam, BEAM_SYNC) is Atom("ok")


async def test_sync_twenty_fresh_connects(beam: BeamPeer, py: Node) -> None:
    for _ in range(20):
        assert await connect_and_sync(beam, py) < 2.0
        await global_names.sync(py, timeout=2)
        await ev(beam, f"erlang:monitor_node('{py.name.name}', true)")
        down = asyncio.get_running_loop().create_future()
        undo = py.monitor_nodes(lambda n, up, f=down: None if up or f.done()
                                else f.set_result(n))
        assert py.disconnect(beam.node)
        await asyncio.wait_for(down, 5)
        undo()
        # the BEAM must see the nodedown too, or its next connect_node reuses the old link
        assert await ev(beam, f"receive {{nodedown, '{py.name.name}'}} -> down "
                              "after 5000 -> still_up end") is Atom("down")


async def test_elixir(epmd: SystemEpmd, py: Node) -> None:
    echo = py.spawn(Echo())
    assert await global_names.register_name(py, "ex_echo", echo.pid)
    with BeamPeer.elixir(epmd_port=epmd.port) as ex:
        await asyncio.to_thread(ex.wait_started)
        agent = await ev(ex, "{:ok, a} = Agent.start(fn -> 1 end, name: {:global, :ex_agent}); a")
        assert await ev(ex, f"Node.connect(:'{py.name.name}')") is True
        start = time.monotonic()
        assert await ev(ex, ":global.sync()") is Atom("ok")
        assert time.monotonic() - start < 2.0
        assert await ev(ex, "GenServer.call({:global, :ex_echo}, :hi)") == (Atom("echo"),
                                                                          Atom("hi"))
        await global_names.sync(py, timeout=2)
        assert global_names.whereis_name(py, "ex_agent") == agent
        global_names.send(py, "ex_agent", "hello")
        assert isinstance(agent, Pid)


async def test_three_nodes(epmd: SystemEpmd, otp: str, py: Node) -> None:
    with BeamPeer.erlang("25", epmd_port=epmd.port) as a, \
            BeamPeer.erlang(otp, epmd_port=epmd.port) as b:
        await asyncio.gather(asyncio.to_thread(a.wait_started), asyncio.to_thread(b.wait_started))
        await ev(a, "Pa = spawn(fun() -> receive _ -> ok end end), "
                    "yes = global:register_name(on_a, Pa)")
        assert await ev(a, f"net_kernel:connect_node('{b.node}')") is True
        assert await ev(a, BEAM_SYNC) is Atom("ok")
        echo = py.spawn(Echo())
        assert await global_names.register_name(py, "on_py", echo.pid)
        await connect_and_sync(a, py)
        await global_names.sync(py, timeout=3)
        assert Atom(b.node) in py.nodes()
        for peer in (a, b):
            assert await ev(peer, BEAM_SYNC) is Atom("ok")
            assert await ev(peer, "global:whereis_name(on_py)") == echo.pid
        await ev(b, "Pb = spawn(fun() -> receive _ -> ok end end), "
                    "yes = global:register_name(on_b, Pb)")
        assert global_names.whereis_name(py, "on_a") is not None
        assert global_names.whereis_name(py, "on_b") is not None
        echo2 = py.spawn(Echo())
        assert await global_names.register_name(py, "on_py2", echo2.pid, timeout=10)
        for peer in (a, b):
            assert await ev(peer, "global:whereis_name(on_py2)") == echo2.pid


async def test_two_python_nodes(epmd: SystemEpmd, py: Node) -> None:
    """No BEAM starts the lock step between two Python nodes: one of them must, and names
    registered on either side become visible on the other, before and after the connect."""
    before = py.spawn(Echo())
    assert await global_names.register_name(py, "py_before", before.pid)
    async with Node(unique_name("py") + "@localhost", cookie="pybroadway",
                    epmd_port=epmd.port) as other:
        assert await other.connect(py.name)
        await asyncio.gather(global_names.sync(py, timeout=8), global_names.sync(other,
                                                                                 timeout=8))
        assert global_names.whereis_name(other, "py_before") == before.pid
        after = other.spawn(Echo())
        assert await global_names.register_name(other, "py_after", after.pid)
        assert global_names.whereis_name(py, "py_after") == after.pid
        found = global_names.whereis_name(py, "py_after")
        assert await py.call(found, "hi") == (Atom("echo"), b"hi")
        assert not py_locks_left(py) and not py_locks_left(other)


def py_locks_left(node: Node) -> bool:
    return bool(global_names.server(node).locks)


@pytest.mark.parametrize("python_name", ["aaa", "zzz"], ids=["python-resolves",
                                                              "beam-resolves"])
async def test_name_clash_is_resolved_like_the_beam(epmd: SystemEpmd, beam: BeamPeer,
                                                    python_name: str) -> None:
    """Both sides registered the same name apart; on connect the smaller node's pid keeps it
    and the other is killed (global:random_exit_name/3), whichever side resolves."""
    async with Node(unique_name(python_name) + "@localhost", cookie="pybroadway",
                    epmd_port=epmd.port) as node:
        mine = node.spawn(Echo())
        assert await global_names.register_name(node, "clash", mine.pid)
        theirs = await ev(beam, "P = spawn(fun() -> receive stop -> ok end end), "
                                "yes = global:register_name(clash, P), P")
        await connect_and_sync(beam, node)
        python_wins = node.name.name < beam.node
        winner = mine.pid if python_wins else theirs
        await eventually_async(lambda: global_names.whereis_name(node, "clash") == winner)
        assert await ev(beam, "global:whereis_name(clash)") == winner
        if python_wins:
            assert await ev(beam, "is_process_alive(P)") is False
        else:
            assert await asyncio.wait_for(mine.wait(), 5) == Atom("killed")


async def test_a_flood_of_unknown_messages_to_global_logs_a_few_lines(
        beam: BeamPeer, py: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pybroadway.erldist.global")
    assert await connect_and_sync(beam, py) < 2.0
    server = f"{{global_name_server, '{py.name.name}'}}"
    # casts, plain messages and calls global does not know; the last call is one it does,
    # so its answer comes after every one of them was handled
    known = await ev(beam, f"""
        [gen_server:cast({server}, {{junk, I}}) || I <- lists:seq(1, 1000)],
        [{server} ! {{junk, I}} || I <- lists:seq(1, 1000)],
        [catch gen_server:call({server}, {{junk, I}}) || I <- lists:seq(1, 100)],
        gen_server:call({server}, get_known)""")
    assert known == [Atom(beam.node)]
    lines = [r.getMessage() for r in caplog.records if "global" in r.getMessage()]
    assert 1 <= len(lines) <= 10, lines[:12]
