"""What the GenStage tests share: Python nodes with no Erlang, a recording consumer, a raw
process that speaks the protocol by hand."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pybroadway.erldist import Node, Process
from pybroadway.erldist.stages import ConsumerStage, Subscription
from testkit.peers import unique_name

WAIT = 10.0


@contextlib.asynccontextmanager
async def nodes(epmd_port: int, count: int = 2) -> AsyncIterator[list[Node]]:
    """``count`` connected Python nodes (the first starts an embedded EPMD)."""
    async with contextlib.AsyncExitStack() as stack:
        started = [await stack.enter_async_context(
            Node(f"{unique_name('gs')}@localhost", cookie="gs", epmd_port=epmd_port))
            for _ in range(count)]
        for i, one in enumerate(started):  # a full mesh, as global wants it
            for other in started[i + 1:]:
                assert await one.connect(other.name)
        yield started


class Recorder(ConsumerStage):
    """Keeps every event and every ended subscription; wakes waiters."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.events: list[Any] = []
        self.batches: list[tuple[Subscription, int]] = []
        self.ended: list[tuple[Subscription, Any]] = []
        self._changed = asyncio.Event()

    def handle_events(self, events: list[Any], subscription: Subscription) -> None:
        self.events += events
        self.batches.append((subscription, len(events)))
        self._changed.set()

    def on_cancel(self, subscription: Subscription, reason: Any) -> None:
        self.ended.append((subscription, reason))
        self._changed.set()

    async def until(self, condition: Any, what: str = "") -> None:
        async with asyncio.timeout(WAIT):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def wait_events(self, count: int) -> None:
        await self.until(lambda: len(self.events) >= count)

    async def wait_ended(self, count: int = 1) -> None:
        await self.until(lambda: len(self.ended) >= count)


class Probe(Process):
    """A bare process: the test sends protocol messages by hand and reads the answers."""

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def next(self, timeout: float = WAIT) -> Any:
        return await self.receive(timeout=timeout)
