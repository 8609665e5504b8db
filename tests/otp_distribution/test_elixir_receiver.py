"""The Python client against an Elixir receiver that behaves like the original library's.

The real Broadway cannot be installed here, so the receiver is plain Elixir: a GenServer
registered in ``:global`` as ``:off_broadway_otp_distribution_receiver`` that answers
``:register`` with ``:ok`` (monitoring the caller), records ``{:push_message, data}`` and
``{:respond_to_pull_request, data}`` casts, and casts ``:request_message`` to its clients when
the test asks it to. The Python node finds it through ``:global`` like the Elixir client does.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pybroadway.erldist import Node
from pybroadway.otp_distribution import Client
from pybroadway.term import Atom, Pid, decode
from testkit.peers import BeamPeer, SystemEpmd, unique_name
from testkit.wait import eventually_async
from tests.otp_distribution.helpers import COOKIE

# Replies to {:wait_*, n} are held until n items were recorded (no polling from the test).
ELIXIR_RECEIVER = r'''
defmodule PbOrigReceiver do
  use GenServer

  @name :off_broadway_otp_distribution_receiver

  def start do
    GenServer.start(__MODULE__, nil, name: {:global, @name})
  end

  def init(nil) do
    {:ok, %{registered: [], down: [], pushed: [], answers: [], waiting: []}}
  end

  def handle_call(:register, {pid, _tag}, state) do
    Process.monitor(pid)
    {:reply, :ok, %{state | registered: state.registered ++ [pid]}}
  end

  def handle_call(:state, _from, state) do
    {:reply, %{registered: state.registered, down: state.down,
               pushed: Enum.reverse(state.pushed), answers: Enum.reverse(state.answers)},
     state}
  end

  def handle_call({:request, count}, _from, state) do
    for pid <- state.registered, _ <- 1..count, do: GenServer.cast(pid, :request_message)
    {:reply, :ok, state}
  end

  def handle_call({:wait, key, count}, from, state) do
    check(%{state | waiting: [{key, count, from} | state.waiting]})
  end

  def handle_cast({:push_message, data}, state) do
    check(%{state | pushed: [data | state.pushed]})
  end

  def handle_cast({:respond_to_pull_request, data}, state) do
    check(%{state | answers: [data | state.answers]})
  end

  def handle_info({:DOWN, _ref, :process, pid, reason}, state) do
    check(%{state | registered: List.delete(state.registered, pid),
                    down: state.down ++ [{pid, reason}]})
  end

  defp check(state) do
    {done, waiting} =
      Enum.split_with(state.waiting, fn {key, count, _} ->
        length(Map.fetch!(state, key)) >= count
      end)
    for {_, _, from} <- done, do: GenServer.reply(from, :ok)
    {:noreply, %{state | waiting: waiting}}
  end
end
{:ok, _} = PbOrigReceiver.start()
:ok
'''

RECEIVER = "{:global, :off_broadway_otp_distribution_receiver}"


@asynccontextmanager
async def elixir_receiver_and_python_node(epmd: SystemEpmd) -> AsyncIterator[
        tuple[BeamPeer, Node]]:
    """An Elixir node running the receiver, and a Python node connected to it."""
    with BeamPeer.elixir(epmd_port=epmd.port, cookie=COOKIE) as peer:
        await asyncio.to_thread(peer.wait_started)
        await peer.aeval(ELIXIR_RECEIVER)
        async with Node(f"{unique_name('pyc')}@localhost", cookie=COOKIE,
                        epmd_port=epmd.port) as node:
            assert await node.connect(peer.node)
            yield peer, node


async def receiver_state(peer: BeamPeer) -> dict[str, Any]:
    """The receiver's records; lists as Python lists (short lists of small integers come as
    Charlist, their compact encoding)."""
    state = decode(await peer.aeval(f"GenServer.call({RECEIVER}, :state)"))
    return {key.name: list(value) for key, value in state.items()}


async def wait_recorded(peer: BeamPeer, key: str, count: int) -> None:
    assert decode(await peer.aeval(
        f"GenServer.call({RECEIVER}, {{:wait, :{key}, {count}}}, 10_000)")) == Atom("ok")


async def test_python_client_registers_and_pushes_in_order(epmd: SystemEpmd) -> None:
    async with elixir_receiver_and_python_node(epmd) as (peer, node):
        client = await Client.start(node)  # finds the receiver through :global
        try:
            assert isinstance(client.receiver, Pid)
            assert client.receiver.node == Atom(peer.node)
            state = await receiver_state(peer)
            assert state["registered"] == [client.pid]
            for i in range(2000):
                client.push_message((i, b"How are you?"))
            await wait_recorded(peer, "pushed", 2000)
            state = await receiver_state(peer)
            assert state["pushed"] == [(i, b"How are you?") for i in range(2000)]
            assert state["answers"] == []
        finally:
            client.exit()
            await client.wait()
        # the receiver monitored the client: it sees it go
        await wait_recorded(peer, "down", 1)
        state = await receiver_state(peer)
        assert state["registered"] == []
        assert [pid for pid, _reason in state["down"]] == [client.pid]


async def test_python_client_answers_pull_requests(epmd: SystemEpmd) -> None:
    counter = itertools.count(1)
    async with elixir_receiver_and_python_node(epmd) as (peer, node):
        client = await Client.start(node, on_request=lambda: next(counter))
        try:
            assert decode(await peer.aeval(f"GenServer.call({RECEIVER}, {{:request, 1}})")) \
                == Atom("ok")
            await wait_recorded(peer, "answers", 1)
            assert (await receiver_state(peer))["answers"] == [1]
            await peer.aeval(f"GenServer.call({RECEIVER}, {{:request, 500}})")
            await wait_recorded(peer, "answers", 501)
            state = await receiver_state(peer)
            assert state["answers"] == list(range(1, 502))
            assert state["pushed"] == []
        finally:
            client.exit()
            await client.wait()


async def test_python_async_client_answers_and_pushes_interleaved(epmd: SystemEpmd) -> None:
    async def alive() -> bytes:
        await asyncio.sleep(0)  # a coroutine callback, as users may write one
        return b"I'm alive!"

    async with elixir_receiver_and_python_node(epmd) as (peer, node):
        client = await Client.start(node, on_request=alive)
        try:
            await peer.aeval(f"GenServer.call({RECEIVER}, {{:request, 100}})")
            for i in range(100):
                client.push_message(i)
            await wait_recorded(peer, "answers", 100)
            await wait_recorded(peer, "pushed", 100)
            state = await receiver_state(peer)
            assert state["answers"] == [b"I'm alive!"] * 100
            assert state["pushed"] == list(range(100))
        finally:
            client.exit()
            await client.wait()


async def test_python_client_registers_again_when_the_receiver_restarts(
        epmd: SystemEpmd) -> None:
    async with elixir_receiver_and_python_node(epmd) as (peer, node):
        client = await Client.start(node, backoff=0.05)
        try:
            first = client.receiver
            await peer.aeval(f"GenServer.stop({RECEIVER})")
            await peer.aeval("{:ok, _} = PbOrigReceiver.start()")
            # the client saw :DOWN, looked the name up again and registered with the new one
            await eventually_async(lambda: client.is_connected and client.receiver != first)
            assert (await receiver_state(peer))["registered"] == [client.pid]
            client.push_message(b"again")
            await wait_recorded(peer, "pushed", 1)
            assert (await receiver_state(peer))["pushed"] == [b"again"]
        finally:
            client.exit()
            await client.wait()
