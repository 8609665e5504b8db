"""Demand: producers never deliver more than processors asked for; push-mode buffer signals."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from pybroadway.pipeline import Message, Producer

from .helpers import Passthrough, Recorder


class Counting(Producer):
    """A pull producer that answers each demand in full, from an endless source."""

    mode = "pull"
    recorder: Recorder

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.demands: list[int] = []
        self.next = 0

    def handle_demand(self, demand: int) -> list[Message]:
        self.demands.append(demand)
        batch = [Message(self.next + i, None, (self.recorder, None, None)) for i in range(demand)]
        self.next += demand
        return batch


async def test_demand_is_asked_in_max_demand_chunks_and_never_exceeded() -> None:
    recorder = Recorder()
    Counting.recorder = recorder
    inboxes: list[int] = []
    handled = asyncio.Event()

    class Watching(Passthrough):
        def handle_message(self, processor: str, message: Message, context: Any) -> Message:
            inboxes.append(sum(len(chunk) for _, chunk in self._running().processors[0].inbox))
            if message.data >= 500:
                handled.set()
            return message

    pipeline = Watching(producer={"module": Counting},
                        processors={"default": {"concurrency": 1, "max_demand": 8,
                                                "min_demand": 2}})
    async with pipeline:
        await asyncio.wait_for(handled.wait(), 5)
        producer = pipeline.producers[0]
        assert producer.demands[0] == 8
        assert all(2 <= demand <= 8 for demand in producer.demands)
        assert producer.next == sum(producer.demands)
        # asked and not yet acknowledged never goes above max_demand
        assert producer.next - recorder.count <= 8
        assert max(inboxes) <= 8
        assert pipeline.stats()["in_flight"] <= 8
    assert recorder.count == producer.next  # everything delivered was acknowledged


async def test_async_pull_with_late_delivery_through_push_messages() -> None:
    recorder = Recorder()

    class Remote(Producer):
        mode = "pull"

        def __init__(self) -> None:
            super().__init__()
            self.asked = 0
            self.sent = 0

        async def handle_demand(self, demand: int) -> None:
            self.asked += demand
            asyncio.get_running_loop().call_soon(self.answer)

        def answer(self) -> None:
            count = self.pending_demand
            assert self.sent + count <= self.asked
            self.push_messages(Message(self.sent + i, None, (recorder, None, None))
                               for i in range(count))
            self.sent += count

    pipeline = Passthrough(producer={"module": Remote},
                           processors={"default": {"concurrency": 3, "max_demand": 5}})
    async with pipeline:
        await recorder.wait_for(200)
        producer = pipeline.producers[0]
        assert producer.pending_demand <= producer.asked
    assert recorder.failed == []


async def test_delivering_more_than_asked_is_reported(caplog: Any) -> None:
    recorder = Recorder()

    class Greedy(Producer):
        mode = "pull"

        def handle_demand(self, demand: int) -> list[Message]:
            if getattr(self, "done", False):
                return []
            self.done = True
            return [Message(i, None, (recorder, None, None)) for i in range(demand + 3)]

    pipeline = Passthrough(producer={"module": Greedy},
                           processors={"default": {"concurrency": 1, "max_demand": 4}})
    with caplog.at_level(logging.ERROR, logger="pybroadway.pipeline"):
        async with pipeline:
            await recorder.wait_for(7)
            assert pipeline.stats()["demand_exceeded"] == 1
    assert "handle_demand delivered 7 messages but only 4 were asked for" in caplog.text
    assert sorted(m.data for m in recorder.successful) == list(range(7))  # none lost


async def test_push_mode_buffer_full_and_available() -> None:
    recorder = Recorder()
    events: list[str] = []
    gate = asyncio.Event()

    class Source(Producer):
        def on_buffer_full(self) -> None:
            events.append("full")

        def on_buffer_available(self) -> None:
            events.append("available")

    class Gated(Passthrough):
        async def handle_message(self, processor: str, message: Message,
                                 context: Any) -> Message:
            await gate.wait()
            return message

    pipeline = Gated(producer={"module": (Source, {"buffer_size": 10, "resume_at": 4})},
                     processors={"default": {"concurrency": 1, "max_demand": 2}})
    async with pipeline:
        producer = pipeline.producers[0]
        await asyncio.sleep(0)  # let the processor ask for its first demand
        assert producer.push_messages(Message(i, None, (recorder, None, None))
                                      for i in range(5))
        # the processor took its max_demand of 2; 3 wait in the buffer
        assert producer.buffered == 3
        assert not producer.push_messages(Message(i, None, (recorder, None, None))
                                          for i in range(5, 12))
        assert producer.is_full and events == ["full"]
        waiting = asyncio.ensure_future(producer.wait_for_room())
        await asyncio.sleep(0)
        assert not waiting.done()
        gate.set()
        await asyncio.wait_for(waiting, 5)
        assert events == ["full", "available"]
        assert producer.buffered <= 4
        await recorder.wait_for(12)
    assert [m.data for m in recorder.successful] == list(range(12))


async def test_push_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not part of a running pipeline"):
        Producer().push_messages([Message(1)])
    pipeline = Passthrough(producer={"module": Producer}, processors={"default": {}})
    with pytest.raises(RuntimeError, match="is not running"):
        pipeline.push_messages([Message(1)])


async def test_transformer_turns_events_into_messages() -> None:
    recorder = Recorder()

    def transform(event: Any, options: dict[str, Any]) -> Message:
        return Message(event * options["factor"], None, (recorder, None, None))

    pipeline = Passthrough(producer={"module": Producer, "transformer": (transform,
                                                                          {"factor": 3})},
                           processors={"default": {"concurrency": 1}})
    async with pipeline:
        pipeline.push_messages([1, 2])
        await recorder.wait_for(2)
    assert [m.data for m in recorder.successful] == [3, 6]


def test_a_pull_producer_must_declare_its_mode() -> None:
    with pytest.raises(TypeError, match='declares no mode: add mode = "pull"'):
        class Undeclared(Producer):
            def handle_demand(self, demand: int) -> list[Message]:
                return []
