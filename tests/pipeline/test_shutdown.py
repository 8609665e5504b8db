"""Graceful stop: in-flight work finishes, batches flush, leftovers are acked as failed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pybroadway.pipeline import BatchInfo, Message, Producer

from .helpers import Passthrough, Recorder, messages, push_options


async def test_stop_drains_everything_in_flight() -> None:
    recorder = Recorder()
    batches: list[tuple[int, str]] = []

    working = asyncio.Event()

    class Slow(Passthrough):
        async def handle_message(self, processor: str, message: Message,
                                 context: Any) -> Message:
            working.set()
            await asyncio.sleep(0.001)
            return message

        def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                         context: Any) -> list[Message]:
            batches.append((len(batch), info.trigger))
            return batch

    pipeline = Slow(**push_options(concurrency=4, max_demand=5),
                    batchers={"default": {"batch_size": 30, "batch_timeout": 60000}})
    await pipeline.start()
    pipeline.push_messages(messages(recorder, range(100)))
    await asyncio.wait_for(working.wait(), 5)
    assert pipeline.stats()["in_flight"] > 0
    await pipeline.stop()
    assert sorted(m.data for m in recorder.successful) == list(range(100))
    assert recorder.failed == []
    assert sum(size for size, _ in batches) == 100
    assert batches[-1] == (10, "flush")
    stats = pipeline.stats()
    assert (stats["handled"], stats["in_flight"], stats["buffered"]) == (100, 0, 0)


async def test_new_work_while_draining_is_failed_not_lost() -> None:
    recorder = Recorder()
    gate = asyncio.Event()

    class Gated(Passthrough):
        async def handle_message(self, processor: str, message: Message,
                                 context: Any) -> Message:
            await gate.wait()
            return message

    pipeline = Gated(**push_options(concurrency=1))
    await pipeline.start()
    pipeline.push_messages(messages(recorder, [1]))
    stopping = asyncio.ensure_future(pipeline.stop())
    await asyncio.sleep(0)
    pipeline.push_messages(messages(recorder, [2]))
    gate.set()
    await stopping
    assert [m.data for m in recorder.successful] == [1]
    assert [(m.data, m.status) for m in recorder.failed] == [(2, ("failed", "shutdown"))]


async def test_shutdown_timeout_acks_the_rest_as_failed() -> None:
    recorder = Recorder()
    stuck: set[int] = set()
    all_stuck = asyncio.Event()

    class Stuck(Passthrough):
        async def handle_message(self, processor: str, message: Message,
                                 context: Any) -> Message:
            if message.data >= 10:
                stuck.add(message.data)
                if len(stuck) == 2:  # both processors
                    all_stuck.set()
                await asyncio.Event().wait()  # never returns
            return message

        async def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                               context: Any) -> list[Message]:
            if info.batch_key == "stuck":
                await asyncio.Event().wait()
            return batch

    class Keyed(Stuck):
        async def handle_message(self, processor: str, message: Message,
                                 context: Any) -> Message:
            message = await super().handle_message(processor, message, context)
            return message.put_batch_key("stuck" if message.data < 3 else "fine")

    pipeline = Keyed(**push_options(concurrency=2, max_demand=4), shutdown=100,
                     batchers={"default": {"batch_size": 3, "batch_timeout": 60000,
                                           "concurrency": 2}})
    await pipeline.start()
    pipeline.push_messages(messages(recorder, range(50)))
    await asyncio.wait_for(all_stuck.wait(), 5)
    started = time.monotonic()
    await pipeline.stop()
    assert time.monotonic() - started < 1.0
    assert recorder.count == 50  # every message acknowledged exactly once
    assert len({id(m) for m in recorder.successful + recorder.failed}) == 50
    # only full "fine" batches of messages 3..9 could be handled; the chunks stuck in
    # handle_message, the stuck batch and the unfilled batch are failed
    successful = [m.data for m in recorder.successful]
    assert len(successful) in (3, 6) and set(successful) < set(range(3, 10))
    assert {m.status for m in recorder.failed} == {("failed", "shutdown")}
    assert pipeline.stats()["in_flight"] == 0


async def test_producer_lifecycle_hooks() -> None:
    calls: list[str] = []

    class Hooked(Producer):
        async def on_start(self) -> None:
            calls.append("start")

        def prepare_for_draining(self) -> None:
            calls.append("drain")

        async def on_stop(self) -> None:
            calls.append("stop")

    async with Passthrough(producer={"module": Hooked, "concurrency": 2},
                           processors={"default": {}}):
        assert calls == ["start", "start"]
    assert calls == ["start", "start", "drain", "drain", "stop", "stop"]


async def test_stop_now_ends_a_drain_under_way_and_fails_what_is_left() -> None:
    """A second Ctrl-C: the graceful stop that waits for stuck handlers ends at once."""
    recorder = Recorder()
    started = asyncio.Event()

    class Stuck(Passthrough):
        async def handle_message(self, processor: str, message: Message,
                                 context: Any) -> Message:
            started.set()
            await asyncio.sleep(3600)
            return message

    pipeline = Stuck(**push_options(concurrency=1), shutdown=3_600_000)
    await pipeline.start()
    pipeline.push_messages(messages(recorder, range(5)))
    await asyncio.wait_for(started.wait(), 5)
    draining = asyncio.ensure_future(pipeline.stop())
    await asyncio.sleep(0)
    assert not draining.done()
    await asyncio.wait_for(pipeline.stop_now(), 5)
    await asyncio.wait_for(draining, 5)
    assert sorted(m.data for m in recorder.failed) == list(range(5))
    assert {m.status for m in recorder.failed} == {("failed", "shutdown")}
    assert pipeline.stats()["failed"] == 5
