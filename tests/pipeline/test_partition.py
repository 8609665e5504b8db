"""Ordering: messages with the same partition_by key are processed in order."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pybroadway.pipeline import BatchInfo, Message

from .helpers import Passthrough, Recorder, messages, push_options


class Shuffling(Passthrough):
    """Awaits a random number of loop turns per message so processors interleave."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.seen: dict[int, list[int]] = {}
        self.workers: dict[int, set[int]] = {}
        self.random = random.Random(7)

    async def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        for _ in range(self.random.randrange(3)):
            await asyncio.sleep(0)
        key, sequence = message.data
        self.seen.setdefault(key, []).append(sequence)
        self.workers.setdefault(key, set()).add(id(asyncio.current_task()))
        return message


def data(keys: int, per_key: int) -> list[tuple[int, int]]:
    return [(key, sequence) for sequence in range(per_key) for key in range(keys)]


async def test_processor_partitions_keep_order_under_concurrency() -> None:
    recorder = Recorder()
    pipeline = Shuffling(**push_options(concurrency=4, max_demand=3),
                         partition_by=lambda message: message.data[0])
    async with pipeline:
        items = data(keys=10, per_key=30)
        for start in range(0, len(items), 7):
            pipeline.push_messages(messages(recorder, items[start:start + 7]))
            await asyncio.sleep(0)
        await recorder.wait_for(len(items))
    assert all(sequence == list(range(30)) for sequence in pipeline.seen.values())
    assert all(len(tasks) == 1 for tasks in pipeline.workers.values())
    assert len({task for tasks in pipeline.workers.values() for task in tasks}) == 4


async def test_without_partitioning_order_is_not_kept() -> None:
    recorder = Recorder()
    pipeline = Shuffling(**push_options(concurrency=4, max_demand=2))
    async with pipeline:
        pipeline.push_messages(messages(recorder, data(keys=2, per_key=50)))
        await recorder.wait_for(100)
    assert any(sequence != list(range(50)) for sequence in pipeline.seen.values())


async def test_batcher_partitions_keep_order() -> None:
    recorder = Recorder()
    batches: dict[int, list[tuple[int, list[int]]]] = {}

    class Ordered(Shuffling):
        async def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                               context: Any) -> list[Message]:
            for _ in range(self.random.randrange(3)):
                await asyncio.sleep(0)
            for message in batch:
                key, sequence = message.data
                batches.setdefault(key, []).append((info.partition, sequence))
            return batch

    pipeline = Ordered(**push_options(concurrency=3), partition_by=lambda m: m.data[0],
                       batchers={"default": {"concurrency": 3, "batch_size": 4,
                                             "batch_timeout": 10}})
    async with pipeline:
        pipeline.push_messages(messages(recorder, data(keys=6, per_key=20)))
        await recorder.wait_for(120)
    for key, seen in batches.items():
        assert [sequence for _, sequence in seen] == list(range(20))
        assert {partition for partition, _ in seen} == {key % 3}


async def test_a_failing_partition_by_fails_only_that_message() -> None:
    recorder = Recorder()

    def partition(message: Message) -> int:
        return 1 // message.data[0]

    pipeline = Shuffling(**push_options(concurrency=2), partition_by=partition)
    async with pipeline:
        pipeline.push_messages(messages(recorder, [(1, 0), (0, 0), (1, 1)]))
        await recorder.wait_for(3)
    assert [m.data for m in recorder.successful] == [(1, 0), (1, 1)]
    [failed] = recorder.failed
    assert isinstance(failed.status[1], ZeroDivisionError)


@settings(max_examples=25, deadline=None)
@given(keys=st.lists(st.integers(0, 5), min_size=1, max_size=60),
       concurrency=st.integers(1, 4), max_demand=st.integers(1, 8),
       chunk=st.integers(1, 10))
def test_order_per_key_and_exactly_once_acks(keys: list[int], concurrency: int,
                                             max_demand: int, chunk: int) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        pipeline = Shuffling(**push_options(concurrency=concurrency, max_demand=max_demand),
                             partition_by=lambda message: message.data[0])
        items = [(key, position) for position, key in enumerate(keys)]
        async with pipeline:
            for start in range(0, len(items), chunk):
                pipeline.push_messages(messages(recorder, items[start:start + chunk]))
            await recorder.wait_for(len(items))
        assert sorted(m.data for m in recorder.successful) == sorted(items)
        for key, positions in pipeline.seen.items():
            assert positions == [p for k, p in items if k == key]

    asyncio.run(scenario())
