"""Shared pieces for the pipeline tests."""

from __future__ import annotations

import asyncio
from typing import Any

from pybroadway.pipeline import BatchInfo, Message, Producer
from testkit.doubles import Passthrough


class Recorder:
    """An acknowledger that records each ack call and lets a test await a number of acks."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[Message], list[Message]]] = []
        self.count = 0
        self._changed = asyncio.Event()

    def ack(self, ack_ref: Any, successful: list[Message], failed: list[Message]) -> None:
        self.calls.append((ack_ref, list(successful), list(failed)))
        self.count += len(successful) + len(failed)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async def loop() -> None:
            while self.count < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    @property
    def successful(self) -> list[Message]:
        return [m for _, ok, _ in self.calls for m in ok]

    @property
    def failed(self) -> list[Message]:
        return [m for _, _, bad in self.calls for m in bad]


def messages(recorder: Recorder, data: Any, ref: Any = "ref", **fields: Any) -> list[Message]:
    return [Message(item, None, (recorder, ref, None), **fields) for item in data]


def push_options(**processors: Any) -> dict[str, Any]:
    """Options for a push-mode pipeline with one unbounded producer."""
    return {
        "producer": {"module": (Producer, {"buffer_size": None})},
        "processors": {"default": {"concurrency": 2, **processors}},
    }


class Failing(Passthrough):
    """Message 3 fails in the processor; the batch holding 7 fails in its batch processor."""

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        if message.data == 3:
            raise ValueError("three")
        return message

    def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                     context: Any) -> list[Message]:
        if any(m.data == 7 for m in batch):
            raise KeyError("seven")
        return batch
