"""Monitors, links and exit signals between Python processes and BEAM processes."""

from __future__ import annotations

import pytest

from pybroadway.erldist import Exit, Process
from pybroadway.term import Atom, Pid
from testkit.peers import BeamPeer, SystemEpmd
from tests.erldist.nodekit import WAIT, Mailbox, atom, ev, python_node, started

pytestmark = pytest.mark.timeout(60)

EXIT = Atom("EXIT")
DOWN = Atom("DOWN")


class StopsOnRequest(Process):
    """Ends with the reason it is sent."""

    async def run(self) -> None:
        raise Exit(await self.receive())


def down_after(expr: str, then: str = "ok") -> str:
    """Erlang: monitor (by ``expr``), evaluate ``then`` (which may end the target: the monitor
    is in place by then), wait for the DOWN and return {Target, Reason}."""
    return (f"(fun() -> Ref = erlang:monitor(process, {expr}), {then}, "
            "receive {'DOWN', Ref, process, Who, Why} -> {Who, Why} after 5000 -> timeout end "
            "end)()")


async def test_beam_monitors_python_process_by_pid_and_name(epmd: SystemEpmd,
                                                            erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        py = atom(node)
        victim = node.spawn(StopsOnRequest(), name="victim")
        got = await ev(erl_node, f"P = rpc:call({py}, py, whereis, [victim]), "
                                 + down_after("P", then="P ! {shutdown, bye}"))
        assert got == (victim.pid, (Atom("shutdown"), Atom("bye")))
        node.spawn(StopsOnRequest(), name="victim2")
        victim2 = f"{{victim2, {py}}}"
        got = await ev(erl_node, down_after(victim2, then=f"{victim2} ! boom"))
        assert got == ((Atom("victim2"), node.name), Atom("boom"))
        # Monitoring what does not exist: DOWN noproc at once.
        got = await ev(erl_node, down_after(f"{{nobody, {py}}}"))
        assert got == ((Atom("nobody"), node.name), Atom("noproc"))
        # A demonitored process's death sends nothing.
        node.spawn(StopsOnRequest(), name="victim3")
        got = await ev(erl_node, f"R3 = erlang:monitor(process, {{victim3, {py}}}), "
                                 f"erlang:demonitor(R3), {{victim3, {py}}} ! bye, "
                                 f"gen_server:call({{net_kernel, {py}}}, {{is_auth, x}}), "
                                 "receive {'DOWN', R3, _, _, _} -> down after 200 -> none end")
        assert got == Atom("none")


async def test_elixir_monitors_python_process(epmd: SystemEpmd) -> None:
    async with started(BeamPeer.elixir(epmd_port=epmd.port)) as ex, \
            python_node(epmd.port) as node:
        victim = node.spawn(StopsOnRequest(), name="victim")
        got = await ev(ex, f"pid = :rpc.call(:{atom(node)}, :py, :whereis, [:victim])\n"
                           "ref = Process.monitor(pid)\n"
                           "send(pid, :crashed)\n"
                           "receive do {:DOWN, ^ref, :process, who, why} -> {who, why} "
                           "after 5000 -> :timeout end")
        assert got == (victim.pid, Atom("crashed"))


async def test_links_propagate_both_ways(epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        py = atom(node)
        # BEAM process dies abnormally -> the linked trapping Python process gets EXIT.
        remote = await ev(erl_node, "W = spawn(fun() -> receive die -> exit(boom) end end), W")
        assert isinstance(remote, Pid)
        trapper = node.spawn(Mailbox(trap_exit=True))
        trapper.link(remote)
        await ev(erl_node, f"gen_server:call({{net_kernel, {py}}}, {{is_auth, x}}), W ! die")
        assert await trapper.receive(timeout=WAIT) == (EXIT, remote, Atom("boom"))
        # …and a non-trapping one dies with the same reason.
        remote2 = await ev(erl_node, "W2 = spawn(fun() -> receive die -> exit(bang) end end), W2")
        plain = node.spawn(Mailbox(), link=remote2)
        await ev(erl_node, f"gen_server:call({{net_kernel, {py}}}, {{is_auth, x}}), W2 ! die")
        assert await plain.wait() == Atom("bang")
        # Python process dies -> the trapping BEAM driver process gets {'EXIT', Pid, Reason}.
        doomed = node.spawn(StopsOnRequest(), name="doomed")
        got = await ev(erl_node, f"process_flag(trap_exit, true), "
                                 f"D = rpc:call({py}, py, whereis, [doomed]), link(D), "
                                 "D ! oops, receive {'EXIT', D, Why} -> Why after 5000 -> t end")
        assert got == Atom("oops")
        assert doomed.exit_reason == Atom("oops")
        # A BEAM process linked to a Python process dies with it (no trap).
        worker = node.spawn(StopsOnRequest(), name="worker")
        got = await ev(erl_node, f"K = rpc:call({py}, py, whereis, [worker]), "
                                 "L = spawn(fun() -> link(K), receive _ -> ok end end), "
                                 "M = erlang:monitor(process, L), "
                                 "gen_server:call({net_kernel, node(K)}, {is_auth, x}), "
                                 "K ! crash, receive {'DOWN', M, _, _, R} -> R after 5000 -> t end")
        assert got == Atom("crash")
        assert worker.exit_reason == Atom("crash")


async def test_exit_signals_and_unlink(epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        py = atom(node)
        # exit(Pid, kill) from the BEAM kills even a trapping process.
        target = node.spawn(Mailbox(trap_exit=True), name="target")
        await ev(erl_node, f"exit(rpc:call({py}, py, whereis, [target]), kill)")
        assert await target.wait() == Atom("killed")
        # exit(Pid, Reason) to a trapping process arrives as a message.
        trapper = node.spawn(Mailbox(trap_exit=True), name="trapper")
        sender = await ev(erl_node, f"exit(rpc:call({py}, py, whereis, [trapper]), nope), self()")
        assert await trapper.receive(timeout=WAIT) == (EXIT, sender, Atom("nope"))
        # After the BEAM unlinks, its process's death does not reach us (UNLINK_ID on 26+).
        watcher = node.spawn(Mailbox(trap_exit=True), name="watcher")
        remote = await ev(erl_node, f"Wp = rpc:call({py}, py, whereis, [watcher]), "
                                    "U = spawn(fun() -> receive {link, T} -> link(T), "
                                    "receive {unlink, T2} -> unlink(T2), "
                                    "receive die -> exit(boom) end end end end), U")
        await ev(erl_node, "U ! {link, Wp}, U ! {unlink, Wp}, U ! die, "
                           "erlang:monitor(process, U), receive {'DOWN', _, _, _, _} -> ok end, "
                           "Wp ! after_unlink")
        assert await watcher.receive(timeout=WAIT) == Atom("after_unlink")
        assert remote not in watcher.links
        # A Python process's unlink reaches the BEAM too.
        linker = node.spawn(Mailbox(trap_exit=True), name="linker")
        remote2 = await ev(erl_node, "V = spawn(fun() -> receive die -> exit(boom) end end), V")
        linker.link(remote2)
        await ev(erl_node, f"gen_server:call({{net_kernel, {py}}}, {{is_auth, x}})")
        assert await ev(erl_node, "{links, Ls} = process_info(V, links), Ls") == [linker.pid]
        linker.unlink(remote2)
        await ev(erl_node, f"gen_server:call({{net_kernel, {py}}}, {{is_auth, x}})")
        assert await ev(erl_node, "{links, Ls2} = process_info(V, links), Ls2") == []


async def test_python_monitors_beam_process(epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        remote = await ev(erl_node, "X = spawn(fun() -> receive die -> exit(gone) end end), "
                                    "register(xproc, X), X")
        watcher = node.spawn(Mailbox())
        by_pid = watcher.monitor(remote)
        by_name = watcher.monitor(("xproc", erl_node.node))
        missing = watcher.monitor(("nothing_here", erl_node.node))
        assert await watcher.receive(timeout=WAIT) == \
            (DOWN, missing, Atom("process"), ("nothing_here", erl_node.node), Atom("noproc"))
        await ev(erl_node, "X ! die")
        downs = {await watcher.receive(timeout=WAIT), await watcher.receive(timeout=WAIT)}
        assert downs == {(DOWN, by_pid, Atom("process"), remote, Atom("gone")),
                         (DOWN, by_name, Atom("process"), ("xproc", erl_node.node),
                          Atom("gone"))}


async def test_python_sends_exit_signals_to_beam(epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        remote = await ev(erl_node, "E = spawn(fun() -> receive _ -> ok end end), "
                                    "ME = erlang:monitor(process, E), E")
        node.exit(remote, Atom("told_to"))
        assert await ev(erl_node, "receive {'DOWN', ME, _, _, R} -> R after 5000 -> t end") == \
            Atom("told_to")
        # A trapping BEAM process gets it as a message; a normal exit of a linked Python
        # process does not kill a non-trapping BEAM process.
        got = await ev(erl_node, "process_flag(trap_exit, true), self()")
        node.exit(got, Atom("note"))
        msg = await ev(erl_node, "receive {'EXIT', _, Why} -> Why after 5000 -> t end")
        assert msg == Atom("note")
        quiet = node.spawn(StopsOnRequest(), name="quiet")
        got = await ev(erl_node, f"Q = rpc:call({atom(node)}, py, whereis, [quiet]), "
                                 "F = spawn(fun() -> link(Q), receive stop -> ok end end), "
                                 "MF = erlang:monitor(process, F), "
                                 f"gen_server:call({{net_kernel, {atom(node)}}}, {{is_auth, x}}),"
                                 "Q ! normal, "
                                 "receive {'DOWN', MF, _, _, _} -> died after 300 -> alive end")
        assert got == Atom("alive")
        assert quiet.exit_reason == Atom("normal")
