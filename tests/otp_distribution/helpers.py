"""A Python server node with the connector's pipeline, and the Elixir client code the tests use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from pybroadway.erldist import Node
from pybroadway.erldist.tls import TlsSettings
from pybroadway.otp_distribution import DEFAULT_NAME, OtpDistributionProducer
from pybroadway.pipeline import Message, Pipeline
from testkit.peers import BeamPeer, unique_name

COOKIE = "pybroadway"

# A client written against Elixir's standard library only, making the same calls as the
# library's client: :global.sync/whereis_name with retries (or a given receiver), register,
# monitor; it answers pull requests with {label, self(), n}.
ELIXIR_CLIENT = r'''
defmodule PbClient do
  use GenServer

  def start(receiver, label), do: GenServer.start(__MODULE__, {receiver, label})

  def init({receiver, label}) do
    receiver = find(receiver, 10)
    :ok = GenServer.call(receiver, :register)
    Process.monitor(receiver)
    {:ok, %{receiver: receiver, label: label, n: 0}}
  end

  defp find(:global, tries) do
    :global.sync()
    case :global.whereis_name(:off_broadway_otp_distribution_receiver) do
      :undefined when tries > 1 -> Process.sleep(500); find(:global, tries - 1)
      :undefined -> raise "Couldn't connect to off_broadway_otp_distribution_receiver"
      pid -> pid
    end
  end
  defp find(receiver, _tries), do: receiver

  def handle_cast(:request_message, state) do
    n = state.n + 1
    GenServer.cast(state.receiver, {:respond_to_pull_request, {state.label, n}})
    {:noreply, %{state | n: n}}
  end

  # The library's last version: :pull_message, answered with {:send_message, data}.
  def handle_cast(:pull_message, state) do
    n = state.n + 1
    GenServer.cast(state.receiver, {:send_message, {state.label, n}})
    {:noreply, %{state | n: n}}
  end

  def handle_cast({:push_message, data}, state) do
    GenServer.cast(state.receiver, {:push_message, data})
    {:noreply, state}
  end

  def handle_info(_message, state), do: {:noreply, state}
end

defmodule PbPusher do
  # Registers, then pushes {label, 1..count} as fast as it can; tells `parent` when done.
  def start(receiver, label, count, parent) do
    spawn(fn ->
      :ok = GenServer.call(receiver, :register)
      for i <- 1..count, do: GenServer.cast(receiver, {:push_message, {label, i}})
      send(parent, {:pushed, label})
    end)
  end
end
:ok
'''


class Collector:
    """Records handled data and wakes waiters when a count is reached."""

    def __init__(self) -> None:
        self.data: list[Any] = []
        self.metadata: list[Any] = []
        self._goals: list[tuple[int, asyncio.Event]] = []

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        self.data.append(message.data)
        self.metadata.append(message.metadata)
        count = len(self.data)
        for goal, event in self._goals:
            if count >= goal:
                event.set()
        return message

    async def wait_for(self, count: int, timeout: float) -> None:
        event = asyncio.Event()
        if len(self.data) >= count:
            return
        self._goals.append((count, event))
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            raise AssertionError(f"handled {len(self.data)} of {count} within {timeout}s") \
                from None


@contextlib.asynccontextmanager
async def server(epmd_port: int, *, concurrency: int = 1,
                 handle: Callable[..., Any] | None = None, ticktime: float = 60.0,
                 tls: TlsSettings | None = None,
                 **producer: Any) -> AsyncIterator[tuple[Node, Pipeline, Collector,
                                                         OtpDistributionProducer]]:
    """A Python node (distribution over TLS with ``tls``) running a pipeline fed by the
    connector."""
    logging.getLogger("pybroadway.otp_distribution").setLevel(logging.INFO)
    collector = Collector()
    async with Node(f"{unique_name('py')}@localhost", cookie=COOKIE, epmd_port=epmd_port,
                    ticktime=ticktime, tls=tls) as node:
        pipeline = Pipeline(handle_message=handle or collector.handle_message,
                            producer={"module": (OtpDistributionProducer,
                                                 {"node": node, **producer})},
                            processors={"default": {"concurrency": concurrency}})
        async with pipeline:
            yield node, pipeline, collector, pipeline.producers[0]  # type: ignore[misc]


async def elixir_peer(epmd_port: int, server_node: Node, *, extra_erl: str = "") -> BeamPeer:
    """An Elixir node, connected to ``server_node``, with the test client modules loaded."""
    peer = BeamPeer.elixir(epmd_port=epmd_port, cookie=COOKIE, extra_erl=extra_erl)
    await asyncio.to_thread(peer.wait_started)
    assert await peer.araw(
        f"Atom.to_string(Node.connect(:\"{server_node.name.name}\"))") == b"true"
    await peer.aeval(ELIXIR_CLIENT)
    return peer


def receiver_ref(node: Node, name: str = DEFAULT_NAME) -> str:
    """The Elixir expression for the receiver as ``{name, node}``."""
    return f"{{:{name}, :\"{node.name.name}\"}}"
