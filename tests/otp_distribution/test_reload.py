"""Reloading a pipeline in place (``Pipeline.reload``) while Elixir clients of the library's
protocol feed it: the receiver, its :global name, its clients and their monitors stay; nothing
is lost, handled twice or reordered within a partition, and the handled data shows which
version of the code handled it."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from pybroadway.erldist import Node
from pybroadway.otp_distribution import OtpDistributionProducer
from pybroadway.pipeline import Message, Pipeline
from pybroadway.term import Atom, decode
from testkit.peers import SystemEpmd, unique_name
from tests.otp_distribution.helpers import COOKIE, elixir_peer, receiver_ref

# Registers with the receiver found in :global (as the library's client does), monitors it,
# pushes {label, 1..count} at about `per_ms` messages a millisecond, then tells `parent` the
# receiver's pid it used and whether its monitor fired.
STEADY_PUSHER = r'''
defmodule PbSteady do
  def start(label, count, per_ms, parent) do
    spawn(fn ->
      :global.sync()
      receiver = :global.whereis_name(:off_broadway_otp_distribution_receiver)
      :ok = GenServer.call(receiver, :register)
      ref = Process.monitor(receiver)
      push(receiver, label, 1, count, per_ms)
      down = receive do {:DOWN, ^ref, _, _, why} -> why after 0 -> :none end
      send(parent, {:pushed, label, receiver, down})
    end)
  end

  defp push(_receiver, _label, i, count, _per_ms) when i > count, do: :ok
  defp push(receiver, label, i, count, per_ms) do
    GenServer.cast(receiver, {:push_message, {label, i}})
    if rem(i, per_ms) == 0, do: Process.sleep(1)
    push(receiver, label, i + 1, count, per_ms)
  end
end
:ok
'''


class Handled:
    """What each version of the handler saw, in the order handled: ``(version, data)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self._goal: tuple[int, asyncio.Event] | None = None

    def handler(self, version: str, pause: float = 0.0) -> Callable[..., Any]:
        async def handle_message(processor: str, message: Message, context: Any) -> Message:
            if pause:
                await asyncio.sleep(pause)  # holds messages in flight when a reload comes
            self.seen.append((version, message.data))
            if self._goal is not None and len(self.seen) >= self._goal[0]:
                self._goal[1].set()
            return message
        return handle_message

    async def wait_for(self, count: int, timeout: float = 60) -> None:
        if len(self.seen) >= count:
            return
        self._goal = (count, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await self._goal[1].wait()
        except TimeoutError:
            raise AssertionError(f"handled {len(self.seen)} of {count} in {timeout}s") from None

    def versions(self) -> list[str]:
        """The versions in the order they handled, each once."""
        return list(dict.fromkeys(version for version, _ in self.seen))


def by_label(message: Message) -> int:
    return zlib.crc32(message.data[0].name.encode())


@contextlib.asynccontextmanager
async def running(epmd_port: int, handled: Handled, **options: Any
                  ) -> AsyncIterator[tuple[Node, Pipeline, Callable[..., Pipeline]]]:
    """A node and a pipeline of version v1 fed by the connector; ``make(version, pause)``
    makes a successor with the same producer."""
    async with Node(f"{unique_name('reload')}@localhost", cookie=COOKIE,
                    epmd_port=epmd_port) as node:
        mode = options.pop("mode", "push")
        producer = {"module": (OtpDistributionProducer, {"node": node, "mode": mode})}

        def make(version: str, pause: float = 0.0) -> Pipeline:
            return Pipeline(handle_message=handled.handler(version, pause), producer=producer,
                            version=version, **options)

        pipeline = make("v1")
        async with pipeline:
            yield node, pipeline, make


async def test_push_three_reloads_lose_nothing_and_the_client_sees_no_down(
        epmd: SystemEpmd) -> None:
    handled = Handled()
    total = 6000
    async with running(epmd.port, handled, processors={"default": {"concurrency": 2}}
                       ) as (node, pipeline, make):
        receiver = pipeline.producers[0].receiver  # type: ignore[attr-defined]
        pid = receiver.pid
        with await elixir_peer(epmd.port, node) as peer:
            await peer.aeval(STEADY_PUSHER)
            await peer.aeval(f"PbSteady.start(:a, {total}, 3, self())")
            for step, version in enumerate(("v2", "v3", "v4"), start=1):
                await handled.wait_for(step * 1000)
                await pipeline.reload(make(version))
                assert pipeline.stats()["version"] == version
            reply = decode(await peer.aeval(
                "receive do {:pushed, _, r, down} -> {r, down} after 30_000 -> :timeout end"))
            await handled.wait_for(total)
        assert reply == (pid, Atom("none"))  # the pid it found in :global; no :DOWN
        assert receiver.alive and pipeline.producers[0].receiver is receiver  # type: ignore
        stats = pipeline.stats()
    numbers = sorted(data[1] for _, data in handled.seen)
    assert numbers == list(range(1, total + 1))  # none lost, none twice
    assert handled.versions() == ["v1", "v2", "v3", "v4"]
    assert (stats["handled"], stats["failed"], stats["reloads"]) == (total, 0, 3)


async def test_pull_reloads_lose_nothing(epmd: SystemEpmd) -> None:
    handled = Handled()
    async with running(epmd.port, handled, mode="pull",
                       processors={"default": {"concurrency": 2}}) as (node, pipeline, make):
        receiver = pipeline.producers[0].receiver  # type: ignore[attr-defined]
        pid = receiver.pid
        with await elixir_peer(epmd.port, node) as peer:
            await peer.aeval(f"{{:ok, c}} = PbClient.start({receiver_ref(node)}, :p)")
            await peer.aeval("ref = Process.monitor(c); :ok")
            for step, version in enumerate(("v2", "v3", "v4"), start=1):
                await handled.wait_for(step * 300)
                await pipeline.reload(make(version))
            await handled.wait_for(len(handled.seen) + 300)
            # the client is alive, registered once, and never saw the receiver go down
            assert decode(await peer.aeval(
                "receive do {:DOWN, ^ref, _, _, _} -> :down after 0 -> Process.alive?(c) end"
            )) is True
            assert list(receiver.clients) == [decode(await peer.aeval("c"))]
        assert receiver.pid == pid
    numbers = sorted(data[1] for _, data in handled.seen)
    assert numbers == list(range(1, len(numbers) + 1))  # each request answered, handled once
    assert handled.versions() == ["v1", "v2", "v3", "v4"]


async def test_partition_order_holds_across_reloads(epmd: SystemEpmd) -> None:
    """The old version handles slowly, so it still holds messages of every partition when
    the reload comes; the new one must not overtake them."""
    handled = Handled()
    total = 3000
    async with running(epmd.port, handled, partition_by=by_label,
                       processors={"default": {"concurrency": 2, "max_demand": 50}}
                       ) as (node, pipeline, make):
        await pipeline.reload(make("v1-slow", pause=0.002))
        with await elixir_peer(epmd.port, node) as peer:
            await peer.aeval(STEADY_PUSHER)
            await peer.aeval(f"for l <- [:a, :b, :c, :d], do: PbSteady.start(l, {total}, 2, "
                             "self())")
            for step, version in enumerate(("v2-slow", "v3-slow", "v4"), start=1):
                await handled.wait_for(step * 2000)
                await pipeline.reload(make(version, pause=0.002 if "slow" in version else 0))
            await handled.wait_for(4 * total)
    for label in ("a", "b", "c", "d"):
        got = [(version, data[1]) for version, data in handled.seen if data[0] == Atom(label)]
        assert [number for _, number in got] == list(range(1, total + 1))
        versions = [version for version, _ in got]
        # each version took over where the one before it stopped, never interleaved
        assert versions == sorted(versions, key=["v1", "v1-slow", "v2-slow", "v3-slow",
                                                 "v4"].index)
    assert handled.versions()[-1] == "v4"
