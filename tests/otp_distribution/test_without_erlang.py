"""Python client and Python server with no Erlang anywhere: the server's node starts an
embedded EPMD, the client finds the receiver through :global, push and pull work."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from pybroadway.erldist import Node
from pybroadway.otp_distribution import Client
from pybroadway.pipeline import Message
from testkit.peers import free_port, unique_name
from testkit.wait import eventually_async
from tests.otp_distribution.helpers import COOKIE, server


@pytest.fixture(autouse=True)
def no_erlang(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may start an Erlang program: none is on the PATH."""
    monkeypatch.setenv("PATH", "/nonexistent")


@asynccontextmanager
async def client_node(epmd_port: int) -> AsyncIterator[Node]:
    async with Node(f"{unique_name('pyc')}@localhost", cookie=COOKIE,
                    epmd_port=epmd_port) as node:
        yield node


async def test_push_through_global_with_embedded_epmd() -> None:
    port = free_port()
    async with server(port) as (node, _pipeline, collector, _producer), \
            client_node(port) as other:
        assert node._embedded_epmd is not None  # nothing listened on the port
        assert await other.connect(node.name)
        client = await Client.start(other)  # :global.sync + whereis_name, as in Elixir
        for i in range(500):
            client.push_message(i)
        await collector.wait_for(500, timeout=20)
        assert collector.data == list(range(500))
        assert all(m["client"] == client.pid for m in collector.metadata)


async def test_pull_through_global_with_embedded_epmd() -> None:
    port = free_port()
    counter = itertools.count(1)
    async with server(port, mode="pull") as (node, _pipeline, collector, _producer), \
            client_node(port) as other:
        assert await other.connect(node.name)
        await Client.start(other, on_request=lambda: next(counter))
        await collector.wait_for(300, timeout=20)
        assert collector.data[:300] == list(range(1, 301))


async def test_drop_oldest_keeps_the_newest() -> None:
    port = free_port()
    gate = asyncio.Event()
    handled: list[int] = []

    async def slow(processor: str, message: Message, context: object) -> Message:
        await gate.wait()
        handled.append(message.data)
        return message

    async with server(port, handle=slow, overflow="drop_oldest", buffer_size=50) \
            as (node, _pipeline, _collector, producer), client_node(port) as other:
        assert await other.connect(node.name)
        client = await Client.start(other)
        for i in range(1000):
            client.push_message(i)
        # all dropped but the buffer, those set aside and those in hand
        await eventually_async(lambda: producer.dropped >= 1000 - 50 - 50 - 10, timeout=20)
        gate.set()

        def counts() -> str:
            return (f"all 1000 handled or dropped: handled {len(handled)}, dropped "
                    f"{producer.dropped}, buffered {producer.buffered}, aside "
                    f"{len(producer._aside)}")

        await eventually_async(lambda: len(handled) + producer.dropped >= 1000, timeout=20,
                               what=counts)
        assert producer.dropped > 0
        assert len(handled) + producer.dropped == 1000
        assert handled == sorted(handled)
        assert handled[-1] == 999  # the newest survive; the oldest of the overflow went
