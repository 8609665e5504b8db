"""stage_stats(): what went in and out of each stage group, and what waits in it."""

from __future__ import annotations

import asyncio
from typing import Any

from pybroadway.pipeline import Message, Producer
from testkit.wait import eventually_async

from .helpers import Failing, Passthrough, Recorder, messages, push_options


async def test_counts_per_stage() -> None:
    recorder = Recorder()
    pipeline = Failing(**push_options(concurrency=2, max_demand=10), name="Staged",
                       batchers={"default": {"batch_size": 5, "batch_timeout": 10}})
    assert pipeline.stage_stats() == {"producers": [], "processors": [], "batchers": []}
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(10)))
        await recorder.wait_for(10)
        stats = pipeline.stage_stats()
    [producer] = stats["producers"]
    assert producer == {"name": "Staged.Broadway.Producer_0", "received": 10, "taken": 10,
                        "buffered": 0, "pending_demand": 0}
    [processors] = stats["processors"]
    assert 0 < processors.pop("busy") < 5  # seconds spent handling chunks
    assert processors == {"processor_key": "default", "received": 10, "successful": 9,
                          "failed": 1, "queued": 0, "demand": 20}
    [batcher] = stats["batchers"]
    # 9 messages into batches of up to 5: the one with 7 (4 or 5 messages) fails whole
    assert (batcher["batcher_key"], batcher["received"], batcher["queued"]) == ("default", 9, 0)
    assert batcher["batches"] >= 2
    assert batcher["successful"] + batcher["failed"] == 9
    assert batcher["failed"] == len([m for m in recorder.failed if m.data != 3])
    assert pipeline.stats()["failed"] == 1 + batcher["failed"]


class Stalled(Passthrough):
    """Handles nothing until ``release`` is set."""

    release: asyncio.Event

    async def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        await self.release.wait()
        return message


async def test_what_waits_and_what_is_asked() -> None:
    recorder = Recorder()
    pipeline = Stalled(producer={"module": (Producer, {"buffer_size": None})},
                       processors={"default": {"concurrency": 1, "max_demand": 4,
                                               "min_demand": 2}})
    pipeline.release = asyncio.Event()
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(10)))
        await eventually_async(lambda: pipeline.stage_stats()["processors"][0]["queued"])
        stats = pipeline.stage_stats()
        # the processor asked for 4 and got them (one chunk in hand); 6 wait in the buffer
        assert stats["producers"][0]["buffered"] == 6
        assert stats["processors"][0]["queued"] == 4
        assert stats["processors"][0]["demand"] == 0
        pipeline.release.set()
        await recorder.wait_for(10)
    assert pipeline.stage_stats()["processors"][0]["successful"] == 10
