"""Acknowledgement: once per message, grouped per (acknowledger, ack_ref), after leaving."""

from __future__ import annotations

import asyncio
from typing import Any

from pybroadway.pipeline import BatchInfo, Message

from .helpers import Passthrough, Recorder, push_options


def mixed(first: Recorder, second: Recorder, count: int) -> list[Message]:
    return [Message(i, None, ((first, second)[i % 2], f"ref{i % 3}", None))
            for i in range(count)]


def assert_grouped(recorder: Recorder, parity: int) -> None:
    for ref, successful, failed in recorder.calls:
        for message in successful + failed:
            assert message.acknowledger[1] == ref
            assert message.data % 2 == parity
            assert f"ref{message.data % 3}" == ref


async def test_acks_are_grouped_after_processing() -> None:
    first, second = Recorder(), Recorder()

    class Odd(Passthrough):
        def handle_message(self, processor: str, message: Message, context: Any) -> Message:
            return message.failed("odd") if message.data % 5 == 0 else message

    pipeline = Odd(**push_options(concurrency=1, max_demand=60))
    async with pipeline:
        pipeline.push_messages(mixed(first, second, 120))
        await first.wait_for(60)
        await second.wait_for(60)
    assert_grouped(first, 0)
    assert_grouped(second, 1)
    every = [m.data for r in (first, second) for _, s, f in r.calls for m in s + f]
    assert sorted(every) == list(range(120))  # each message acked exactly once
    # one call per (acknowledger, ref) per chunk of 60, not one per message
    assert len(first.calls) == len(second.calls) == 6
    assert {m.data for m in first.failed + second.failed} == set(range(0, 120, 5))


async def test_batched_messages_are_acked_after_handle_batch() -> None:
    first, second = Recorder(), Recorder()
    acked_before_batch: list[int] = []

    class Batching(Passthrough):
        def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                         context: Any) -> list[Message]:
            acked_before_batch.append(first.count + second.count)
            return batch

    pipeline = Batching(**push_options(concurrency=1, max_demand=50),
                        batchers={"default": {"batch_size": 50}})
    async with pipeline:
        pipeline.push_messages(mixed(first, second, 100))
        await first.wait_for(50)
        await second.wait_for(50)
    assert acked_before_batch == [0, 50]
    assert_grouped(first, 0)
    assert_grouped(second, 1)
    assert len(first.calls) == len(second.calls) == 6  # 3 refs x 2 batches


async def test_coroutine_acknowledgers_are_awaited() -> None:
    done = asyncio.Event()
    seen: list[int] = []

    class AsyncAck:
        async def ack(self, ack_ref: Any, successful: list[Message],
                      failed: list[Message]) -> None:
            await asyncio.sleep(0)
            seen.extend(m.data for m in successful)
            if len(seen) == 3:
                done.set()

    pipeline = Passthrough(**push_options(concurrency=1))
    async with pipeline:
        pipeline.push_messages(Message(i, None, (AsyncAck(), None, None)) for i in range(3))
        await asyncio.wait_for(done.wait(), 5)
    assert seen == [0, 1, 2]
