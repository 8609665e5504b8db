"""A pipeline fed by GenStageProducer, recording what it handled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pybroadway.erldist import Node
from pybroadway.gen_stage import GenStageProducer
from pybroadway.pipeline import Message, Pipeline

WAIT = 15.0


class Handled:
    """Every handled message's data and metadata; ``await wait(n)``."""

    def __init__(self) -> None:
        self.data: list[Any] = []
        self.metadata: list[Any] = []
        self._changed = asyncio.Event()

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        self.data.append(message.data)
        self.metadata.append(message.metadata)
        self._changed.set()
        return message

    async def wait(self, count: int) -> None:
        try:
            async with asyncio.timeout(WAIT):
                while len(self.data) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"handled {len(self.data)} of {count}") from None


@contextlib.asynccontextmanager
async def pipeline(node: Node, subscribe_to: list[Any], *,
                   processors: dict[str, Any] | None = None, **options: Any
                   ) -> AsyncIterator[tuple[Pipeline, Handled, GenStageProducer]]:
    """A running pipeline on ``subscribe_to`` (``options`` go to the producer; the processors
    default to two)."""
    handled = Handled()
    running = Pipeline(handle_message=handled.handle_message,
                       producer={"module": (GenStageProducer, {
                           "node": node, "subscribe_to": subscribe_to,
                           "resubscribe_interval": 0.05, **options})},
                       processors={"default": processors or {"concurrency": 2}})
    async with running:
        yield running, handled, running.producers[0]  # type: ignore[misc]
