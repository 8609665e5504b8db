"""Concurrency: the configured number of processors and batch processors really run at once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from pybroadway.pipeline import BatchInfo, Message

from .helpers import Passthrough, Recorder, messages, push_options


class Gauge:
    """Counts callbacks running at the same time; releases them all once `target` are in."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.all_in = threading.Event()

    def enter(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            if self.running >= self.target:
                self.all_in.set()

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


async def test_processors_run_concurrently() -> None:
    gauge = Gauge(4)
    released = asyncio.Event()

    class Slow(Passthrough):
        async def handle_message(self, processor: str, message: Message,
                                 context: Any) -> Message:
            gauge.enter()
            if gauge.all_in.is_set():
                released.set()
            await released.wait()
            gauge.leave()
            return message

    recorder = Recorder()
    pipeline = Slow(**push_options(concurrency=4, max_demand=1, min_demand=0))
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(20)))
        await recorder.wait_for(20)
    assert gauge.peak == 4


async def test_executor_keeps_the_configured_concurrency() -> None:
    gauge = Gauge(3)
    threads: set[str] = set()

    class Blocking(Passthrough):
        def handle_message(self, processor: str, message: Message, context: Any) -> Message:
            threads.add(threading.current_thread().name)
            gauge.enter()
            gauge.all_in.wait(5)  # blocks a worker thread, never the event loop
            time.sleep(0.001)
            gauge.leave()
            return message

    recorder = Recorder()
    pipeline = Blocking(**push_options(concurrency=3, max_demand=1, min_demand=0,
                                       executor="thread"))
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(30)))
        await recorder.wait_for(30)
    assert gauge.peak == 3
    assert all(name.startswith("Blocking.processor") for name in threads)
    assert sorted(m.data for m in recorder.successful) == list(range(30))


async def test_batch_processors_run_concurrently_in_an_executor() -> None:
    gauge = Gauge(2)

    class Batching(Passthrough):
        def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                         context: Any) -> list[Message]:
            gauge.enter()
            gauge.all_in.wait(5)
            gauge.leave()
            return batch

    recorder = Recorder()
    pipeline = Batching(**push_options(),
                        batchers={"default": {"concurrency": 2, "batch_size": 2,
                                              "executor": "thread"}})
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(8)))
        await recorder.wait_for(8)
    assert gauge.peak == 2
