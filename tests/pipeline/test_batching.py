"""Batchers: batches by size, by timeout, by batch key, flush mode, several batchers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pybroadway.pipeline import BatchInfo, Message

from .helpers import Passthrough, Recorder, messages, push_options


class Collecting(Passthrough):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.batches: list[tuple[list[Any], BatchInfo, float]] = []

    def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                     context: Any) -> list[Message]:
        self.batches.append(([m.data for m in batch], info, time.monotonic()))
        return batch


async def test_batches_by_size() -> None:
    recorder = Recorder()
    pipeline = Collecting(**push_options(concurrency=1),
                          batchers={"default": {"batch_size": 10, "batch_timeout": 60000}})
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(30)))
        await recorder.wait_for(30)
    assert [data for data, _, _ in pipeline.batches] == [
        list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
    assert {(i.batcher, i.batch_key, i.size, i.trigger, i.partition)
            for _, i, _ in pipeline.batches} == {("default", "default", 10, "size", None)}


async def test_batches_by_timeout() -> None:
    recorder = Recorder()
    pipeline = Collecting(**push_options(concurrency=1),
                          batchers={"default": {"batch_size": 100, "batch_timeout": 50}})
    async with pipeline:
        pushed = time.monotonic()
        pipeline.push_messages(messages(recorder, range(3)))
        await recorder.wait_for(3)
    [(data, info, handled)] = pipeline.batches
    assert data == [0, 1, 2] and info.trigger == "timeout" and info.size == 3
    assert 0.04 <= handled - pushed < 1.0


async def test_batches_by_batch_key() -> None:
    recorder = Recorder()

    class Keyed(Collecting):
        def handle_message(self, processor: str, message: Message, context: Any) -> Message:
            return message.put_batch_key("even" if message.data % 2 == 0 else "odd")

    pipeline = Keyed(**push_options(concurrency=1),
                     batchers={"default": {"batch_size": 3, "batch_timeout": 20}})
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(8)))
        await recorder.wait_for(8)
    by_key = {(info.batch_key, info.trigger): data for data, info, _ in pipeline.batches}
    assert by_key == {("even", "size"): [0, 2, 4], ("odd", "size"): [1, 3, 5],
                      ("even", "timeout"): [6], ("odd", "timeout"): [7]}


async def test_flush_mode_and_several_batchers() -> None:
    recorder = Recorder()

    class Routing(Collecting):
        def handle_message(self, processor: str, message: Message, context: Any) -> Message:
            message.put_batcher("s3" if message.data < 3 else "sqs")
            if message.data == 1:
                message.put_batch_mode("flush")
            return message

        def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                         context: Any) -> list[Message]:
            assert batcher == info.batcher
            return super().handle_batch(batcher, batch, info, context)

    pipeline = Routing(**push_options(concurrency=1),
                       batchers={"s3": {"batch_size": 10, "batch_timeout": 60000},
                                 "sqs": {"batch_size": 2, "batch_timeout": 60000}})
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(5)))
        await recorder.wait_for(4)
        assert [(i.batcher, d, i.trigger) for d, i, _ in pipeline.batches] == [
            ("s3", [0, 1], "flush"), ("sqs", [3, 4], "size")]
    # message 2 waited in an unfilled batch: stopping flushed it
    assert (pipeline.batches[-1][0], pipeline.batches[-1][1].trigger) == ([2], "flush")
    assert recorder.count == 5


async def test_batchers_apply_backpressure_to_processors() -> None:
    recorder = Recorder()
    gate = asyncio.Event()

    class Slow(Collecting):
        async def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                               context: Any) -> list[Message]:
            await gate.wait()
            return batch

    pipeline = Slow(**push_options(concurrency=1, max_demand=4),
                    batchers={"default": {"batch_size": 2, "batch_timeout": 60000}})
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(100)))
        for _ in range(50):
            await asyncio.sleep(0)
        # 1 batch in handle_batch, 2 ready, and what one processor holds: the rest waits
        assert pipeline.stats()["buffered"] >= 80
        gate.set()
        await recorder.wait_for(100)


async def test_a_message_put_to_a_batcher_of_a_pipeline_without_batchers_warns_once(
        caplog: Any) -> None:
    class PutsToDb(Passthrough):
        def handle_message(self, processor: Any, message: Message, context: Any) -> Message:
            return message.put_batcher("db")

    recorder = Recorder()
    pipeline = PutsToDb(**push_options(concurrency=2))
    with caplog.at_level("WARNING", logger="pybroadway.pipeline"):
        async with pipeline:
            pipeline.push_messages(messages(recorder, range(50)))
            await recorder.wait_for(50)
    warnings = [r.getMessage() for r in caplog.records if "no batchers" in r.getMessage()]
    assert len(warnings) == 1
    assert "'db'" in warnings[0] and "handle_batch never runs" in warnings[0]
    assert len(recorder.successful) == 50  # acknowledged as before: only the warning is new


async def test_big_data_goes_through_every_stage_as_the_same_object() -> None:
    """Messages carry their data by reference: a big binary is never copied on the way from
    the producer through processors, a partitioned batcher and batch processors to the
    acknowledger."""
    recorder = Recorder()
    data = [bytes([i]) * (1 << 20) for i in range(16)]
    seen: list[Any] = []

    class Keeping(Collecting):
        def handle_message(self, processor: str, message: Message, context: Any) -> Message:
            seen.append(message.data)
            return message

    pipeline = Keeping(**push_options(concurrency=2),
                       batchers={"default": {"batch_size": 4, "batch_timeout": 50,
                                             "concurrency": 2}},
                       partition_by=lambda message: message.data[0])
    async with pipeline:
        pipeline.push_messages(messages(recorder, data))
        await recorder.wait_for(len(data))
    batched = [item for items, _, _ in pipeline.batches for item in items]
    acked = [message.data for message in recorder.successful]
    for stage in (seen, batched, acked):
        assert sorted(map(id, stage)) == sorted(map(id, data))
