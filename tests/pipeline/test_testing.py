"""The test helpers push through the real topology and resolve on acknowledgement."""

from __future__ import annotations

import asyncio
from typing import Any

from pybroadway.pipeline import BatchInfo, Message, Producer, test_batch, test_message

from .helpers import Passthrough


class Doubling(Passthrough):
    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        if message.data == "bad":
            return message.failed("bad data")
        return message.update_data(lambda d: d * 2)

    def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                     context: Any) -> list[Message]:
        for message in batch:
            message.metadata["trigger"] = info.trigger
            message.metadata["size"] = info.size
        return batch


def options() -> dict[str, Any]:
    return {"producer": {"module": Producer}, "processors": {"default": {"concurrency": 2}},
            "batchers": {"default": {"batch_size": 10, "batch_timeout": 60000}}}


async def test_test_message_awaits_the_acknowledgement() -> None:
    async with Doubling(**options()) as pipeline:
        successful, failed = await asyncio.wait_for(test_message(pipeline, 21), 5)
        assert ([m.data for m in successful], failed) == ([42], [])
        # flush batch mode: no waiting for the 60 s batch_timeout
        assert successful[0].metadata == {"trigger": "flush", "size": 1}
        successful, failed = await test_message(pipeline, "bad", metadata={"id": 1})
        assert successful == [] and failed[0].status == ("failed", "bad data")
        assert failed[0].metadata == {"id": 1}


async def test_test_batch_resolves_when_all_are_acked() -> None:
    async with Doubling(**options()) as pipeline:
        successful, failed = await asyncio.wait_for(
            test_batch(pipeline, [1, 2, "bad", 3]), 5)
        assert sorted(m.data for m in successful) == [2, 4, 6]
        assert [m.data for m in failed] == ["bad"]
        pending = [test_message(pipeline, i) for i in range(5)]
        results = await asyncio.wait_for(asyncio.gather(*pending), 5)
        assert [ok[0].data for ok, _ in results] == [0, 2, 4, 6, 8]


def test_helpers_are_not_collected_as_tests() -> None:
    assert test_message.__test__ is False  # type: ignore[attr-defined]
    assert test_batch.__test__ is False  # type: ignore[attr-defined]
