"""Clients that join a cluster, push and leave, as the library's clients do, and the two
clusters they join: ``pybroadway serve --workers 2``, and the same shape made of BEAM nodes
(a front whose receiver counts pushes, and two nodes meshed with it). What
tests/workers/test_clients_join.py and bench/client_churn.py share."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

from pybroadway.erldist import Node
from pybroadway.otp_distribution import DEFAULT_NAME, Client
from pybroadway.term import decode
from testkit.peers import BeamPeer, unique_name
from testkit.processes import WatchedProcess, python_env
from testkit.recorded import PIPELINE

ROOT = Path(__file__).resolve().parents[1]
CUT_OFF = "in order to prevent overlapping partitions"
"""What global logs when it disconnects a node to keep the cluster fully connected."""



class Joined(NamedTuple):
    """A client that has pushed: its node's name, and how it leaves (its node stops)."""

    node: str
    leave: Callable[[], Awaitable[None]]


StartClient = Callable[[str, int, str, range], Awaitable[Joined]]
"""``start(front, epmd_port, cookie, pushes)``: a client that pushed each of ``pushes``."""


async def python_client(front: str, epmd_port: int, cookie: str, pushes: range) -> Joined:
    """A Python node whose :class:`Client` connects to ``front``, finds the receiver through
    ``:global`` and pushes each of ``pushes``."""
    node = Node(f"{unique_name('pyc')}@localhost", cookie=cookie, epmd_port=epmd_port)
    await node.start()
    try:
        client = await Client.start(node, server=front)
        for i in pushes:
            client.push_message(i)
    except BaseException:
        await node.stop()
        raise
    return Joined(node.name.name, node.stop)


async def elixir_client(front: str, epmd_port: int, cookie: str, pushes: range) -> Joined:
    """An Elixir node running examples/client.ex (``:global.sync`` and ``whereis_name``, as
    the library's client does) that connects to ``front`` and pushes each of ``pushes``."""
    peer = BeamPeer.elixir(epmd_port=epmd_port, cookie=cookie, name=unique_name("exc"))
    try:
        await asyncio.to_thread(peer.wait_started)
        await peer.aeval(f'true = Node.connect(:"{front}")')
        await peer.aeval(f'Code.require_file("{ROOT / "examples" / "client.ex"}")')
        await peer.aeval("{:ok, _} = ExamplesClient.start()")
        await peer.aeval(f"for i <- {pushes.start}..{pushes.stop - 1}, "
                         f"do: ExamplesClient.push_message(i)")
    except BaseException:
        peer.kill()
        raise

    async def leave() -> None:
        peer.kill()
    return Joined(peer.node, leave)


CLIENTS: dict[str, StartClient] = {"python": python_client, "elixir": elixir_client}


def serve_with_workers(front: str, epmd_port: int, cookie: str, log: Path) -> WatchedProcess:
    """``pybroadway serve --workers 2`` on ``front`` (its embedded EPMD on ``epmd_port``),
    whose workers record what they handle in ``log`` (:mod:`testkit.recorded`)."""
    return WatchedProcess(
        [sys.executable, "-m", "pybroadway", "serve", "--workers", "2", "--quiet",
         "--pipeline", PIPELINE, "--cookie", cookie,
         "--sname", front, "--epmd-port", str(epmd_port)],
        cwd=ROOT, env=python_env(PYTHONPATH=str(ROOT), PYBROADWAY_TEST_LOG=str(log)))


COUNTING_RECEIVER = """
defmodule ChurnReceiver do
  use GenServer
  def init(nil), do: {:ok, 0}
  def handle_call(:register, _from, count), do: {:reply, :ok, count}
  def handle_call(:count, _from, count), do: {:reply, count, count}
  def handle_cast({:push_message, _}, count), do: {:noreply, count + 1}
  def handle_cast(_, count), do: {:noreply, count}
end
"""


class BeamCluster:
    """The shape of ``serve --workers 2`` made of Elixir nodes: a front whose receiver, a
    GenServer registered in ``:global`` under the library's name, counts pushes, and two
    nodes connected to it (global meshes them, as it meshes the workers)."""

    def __init__(self, epmd_port: int, cookie: str) -> None:
        self.front = BeamPeer.elixir(epmd_port=epmd_port, cookie=cookie,
                                     name=unique_name("bfront"))
        self.others = [BeamPeer.elixir(epmd_port=epmd_port, cookie=cookie,
                                       name=unique_name("bwork")) for _ in range(2)]

    async def start(self) -> None:
        for peer in (self.front, *self.others):
            await asyncio.to_thread(peer.wait_started)
        await self.front.aeval(f"Code.eval_string({COUNTING_RECEIVER!r}); :ok")
        await self.front.aeval(f"{{:ok, pid}} = GenServer.start(ChurnReceiver, nil); :yes = "
                               f":global.register_name(:{DEFAULT_NAME}, pid); :ok")
        for peer in self.others:
            await peer.aeval(f'true = Node.connect(:"{self.front.node}"); :global.sync()')

    async def count(self) -> int:
        """Pushes the receiver has taken (a call: every push cast before it is counted)."""
        reply = await self.front.aeval(
            f"GenServer.call(:global.whereis_name(:{DEFAULT_NAME}), :count)")
        count = decode(reply)
        assert type(count) is int, count
        return count

    def log(self) -> list[str]:
        """What the cluster's nodes printed, each line after its node's name."""
        return [f"{peer.name}: {line}" for peer in (self.front, *self.others)
                for line in peer.output.splitlines()]

    def stop(self) -> None:
        for peer in (self.front, *self.others):
            peer.kill()
