"""gen_server both ways: BEAM callers into Python GenServers, Python calling BEAM servers."""

from __future__ import annotations

import asyncio

import pytest

from pybroadway.erldist import CallError, Exit, GenServer
from pybroadway.term import Atom, Pid
from testkit.peers import BeamPeer, SystemEpmd
from tests.erldist.nodekit import WAIT, Echo, atom, ev, python_node, started

pytestmark = pytest.mark.timeout(60)

ELIXIR_SERVER = """
defmodule PyTestServer do
  use GenServer
  def init(state), do: {:ok, state}
  def handle_call({:sleep, ms}, _from, state) do
    Process.sleep(ms)
    {:reply, :late, state}
  end
  def handle_call(:casts, _from, state), do: {:reply, Enum.reverse(state), state}
  def handle_call(:crash, _from, _state), do: exit(:crashed_on_purpose)
  def handle_call(request, _from, state), do: {:reply, {:echo, request}, state}
  def handle_cast(request, state), do: {:noreply, [request | state]}
end
{:ok, _} = GenServer.start(PyTestServer, [], name: :ex_server)
:ok
"""


@pytest.fixture
async def elixir(epmd: SystemEpmd):
    async with started(BeamPeer.elixir(epmd_port=epmd.port)) as peer:
        yield peer


async def test_elixir_calls_and_casts_a_python_genserver(epmd: SystemEpmd,
                                                         elixir: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        echo = node.spawn(Echo(), name="echo")
        py = atom(node)
        assert await ev(elixir, f"GenServer.call({{:echo, :{py}}}, %{{a: [1, 300]}})") == \
            (Atom("echo"), {Atom("a"): [1, 300]})
        pid = await ev(elixir, f"pid = GenServer.call({{:echo, :{py}}}, :pid)")
        assert pid == echo.pid
        assert await ev(elixir, "GenServer.call(pid, \"by pid\")") == (Atom("echo"), b"by pid")
        assert await ev(elixir, "GenServer.call(pid, {:later, 42})") == 42
        assert await ev(elixir, f"GenServer.cast({{:echo, :{py}}}, {{:hello, 1}})") == Atom("ok")
        await asyncio.wait_for(echo.cast_event.wait(), WAIT)
        assert echo.casts == [(Atom("hello"), 1)]
        got = await ev(elixir, f"try do GenServer.call({{:nope, :{py}}}, :hi, 5000) "
                               "catch :exit, reason -> reason end")
        assert got[0] == Atom("noproc")


async def test_python_calls_and_casts_an_elixir_genserver(epmd: SystemEpmd,
                                                          elixir: BeamPeer) -> None:
    await ev(elixir, ELIXIR_SERVER)
    async with python_node(epmd.port) as node:
        target = ("ex_server", elixir.node)
        assert await node.call(target, [1, 300], timeout=WAIT) == (Atom("echo"), [1, 300])
        node.cast(target, Atom("one"))
        node.cast(target, Atom("two"))
        assert await node.call(target, Atom("casts"), timeout=WAIT) == [Atom("one"), Atom("two")]
        # A call that times out; its late reply is dropped and does not answer the next call.
        with pytest.raises(CallError) as info:
            await node.call(target, (Atom("sleep"), 300), timeout=0.05)
        assert info.value.reason == Atom("timeout")
        assert await node.call(target, Atom("after"), timeout=WAIT) == \
            (Atom("echo"), Atom("after"))
        assert node._calls.pending == {}
        # The server dies during the call: the caller gets its exit reason.
        with pytest.raises(CallError) as info:
            await node.call(target, Atom("crash"), timeout=WAIT)
        assert info.value.reason == Atom("crashed_on_purpose")
        with pytest.raises(CallError) as info:
            await node.call(target, Atom("again"), timeout=WAIT)
        assert info.value.reason == Atom("noproc")


async def test_erlang_calls_and_casts_a_python_genserver(epmd: SystemEpmd,
                                                         erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        echo = node.spawn(Echo(), name="echo")
        py = atom(node)
        assert await ev(erl_node, f"gen_server:call({{echo, {py}}}, {{a, <<1>>}})") == \
            (Atom("echo"), (Atom("a"), b"\x01"))
        pid = await ev(erl_node, f"P = gen_server:call({{echo, {py}}}, pid)")
        assert pid == echo.pid
        assert await ev(erl_node, "gen_server:call(P, [x])") == (Atom("echo"), [Atom("x")])
        assert await ev(erl_node, "gen_server:cast(P, c1), gen_server:cast(P, c2)") == Atom("ok")
        assert await ev(erl_node, "gen_server:call(P, sync)") == (Atom("echo"), Atom("sync"))
        assert echo.casts == [Atom("c1"), Atom("c2")]
        got = await ev(erl_node, f"catch gen_server:call({{nope, {py}}}, hi, 5000)")
        assert got[0] == Atom("EXIT") and got[1][0] == Atom("noproc")
        # multi_call: OTP 25 tags {Ref, Node}, OTP 28 [[alias|A]|M]; both echoed verbatim.
        got = await ev(erl_node, f"gen_server:multi_call([{py}], echo, multi, 5000)")
        assert got == ([(node.name, (Atom("echo"), Atom("multi")))], [])


async def test_python_calls_erlang_servers(epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        # net_kernel and rex are real gen_servers.
        assert await node.call(("net_kernel", erl_node.node), (Atom("is_auth"), node.name),
                               timeout=WAIT) == Atom("yes")
        rex = ("rex", erl_node.node)
        user = Atom("user")
        assert await node.call(rex, (Atom("call"), Atom("erlang"), Atom("node"), [], user),
                               timeout=WAIT) == Atom(erl_node.node)
        # Timeout; the late `ok` must not answer the next call, which returns {Micros, ok}.
        with pytest.raises(CallError) as info:
            await node.call(rex, (Atom("call"), Atom("timer"), Atom("sleep"), [200], user),
                            timeout=0.05)
        assert info.value.reason == Atom("timeout")
        got = await node.call(rex, (Atom("call"), Atom("timer"), Atom("tc"),
                                    [Atom("timer"), Atom("sleep"), [400]], user), timeout=WAIT)
        assert type(got) is tuple and got[1] == Atom("ok")
        # A cast to the driver process, which we then read from its mailbox.
        await ev(erl_node, "register(driver, self())")
        node.cast(("driver", erl_node.node), (Atom("hi"), 1))
        assert await ev(erl_node, "receive {'$gen_cast', X} -> X after 5000 -> none end") == \
            (Atom("hi"), 1)
        # A call by pid to a hand-made server; a call to a dead pid fails with noproc.
        server = await ev(erl_node, "S = spawn(fun() -> receive {'$gen_call', F, R} -> "
                                    "gen_server:reply(F, {got, R}) end end), S")
        assert isinstance(server, Pid)
        assert await node.call(server, Atom("x"), timeout=WAIT) == (Atom("got"), Atom("x"))
        with pytest.raises(CallError) as info:
            await node.call(server, Atom("again"), timeout=WAIT)
        assert info.value.reason == Atom("noproc")
        with pytest.raises(CallError) as info:
            await node.call(("no_such_name", erl_node.node), Atom("x"), timeout=WAIT)
        assert info.value.reason == Atom("noproc")


class Crashy(GenServer):
    def __init__(self) -> None:
        super().__init__()
        self.terminated: list[object] = []

    async def handle_call(self, request: object, from_: object) -> object:
        if request == Atom("exit"):
            raise Exit((Atom("shutdown"), Atom("asked")))
        if request == Atom("raise"):
            raise RuntimeError("boom")
        return request

    async def terminate(self, reason: object) -> None:
        self.terminated.append(reason)


async def test_python_genserver_crashing_in_a_call(epmd: SystemEpmd, elixir: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        py = atom(node)
        first = node.spawn(Crashy(), name="crashy")
        got = await ev(elixir, f"try do GenServer.call({{:crashy, :{py}}}, :exit) "
                               "catch :exit, reason -> reason end")
        assert got[0] == (Atom("shutdown"), Atom("asked"))
        assert first.terminated == [(Atom("shutdown"), Atom("asked"))]
        second = node.spawn(Crashy(), name="crashy")
        got = await ev(elixir, f"try do GenServer.call({{:crashy, :{py}}}, :raise) "
                               "catch :exit, reason -> reason end")
        assert got[0] == (Atom("exception"), b"RuntimeError: boom")
        assert await second.wait() == (Atom("exception"), "RuntimeError: boom")


async def test_many_concurrent_callers(epmd: SystemEpmd, elixir: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        node.spawn(Echo(), name="echo")
        got = await ev(elixir, f"1..2000 |> Task.async_stream(fn i -> "
                               f"GenServer.call({{:echo, :{atom(node)}}}, i) end, "
                               "max_concurrency: 200) |> Enum.map(fn {:ok, r} -> r end)")
        assert got == [(Atom("echo"), i) for i in range(1, 2001)]


async def test_local_calls_between_python_processes(epmd: SystemEpmd) -> None:
    async with python_node(epmd.port) as node:
        echo = node.spawn(Echo(), name="echo")
        assert await node.call("echo", 1, timeout=WAIT) == (Atom("echo"), 1)
        assert await node.call(echo.pid, (Atom("later"), 2), timeout=WAIT) == 2
        assert await node.call(("echo", node.name.name), 3, timeout=WAIT) == (Atom("echo"), 3)
        with pytest.raises(CallError) as info:
            await node.call("nobody", 1, timeout=WAIT)
        assert info.value.reason == Atom("noproc")
        node.cast("echo", Atom("c"))
        await asyncio.wait_for(echo.cast_event.wait(), WAIT)
        assert echo.casts == [Atom("c")]


async def test_local_call_to_a_server_that_dies(epmd: SystemEpmd) -> None:
    """The caller learns the exit reason at once, not after its timeout."""
    async with python_node(epmd.port) as node:
        crashy = node.spawn(Crashy(), name="crashy")
        with pytest.raises(CallError) as info:
            await node.call("crashy", Atom("exit"), timeout=WAIT)
        # the exit reason, not `timeout`: the caller learnt it before its timeout
        assert info.value.reason == (Atom("shutdown"), Atom("asked"))
        assert crashy.watchers == {} and node._calls.pending == {}
