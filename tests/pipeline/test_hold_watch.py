"""The hold watch: an ``async def`` callback that blocks the event loop between two awaits is
warned about once, by name; one that awaits is not; a pipeline of plain callbacks needs no
watch, and the watch's thread ends with the pipeline."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from typing import Any

import pytest

from pybroadway.pipeline import Message, Pipeline
from pybroadway.pipeline._hold_watch import RESTARTS, HoldWatch

from .helpers import Recorder, messages, push_options

LOGGER = "pybroadway.pipeline"


async def test_an_async_handler_that_blocks_the_loop_is_warned_about_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def blocking(processor: str, message: Message, context: Any) -> Message:
        if message.data in (3, 7):
            time.sleep(0.4)  # the mistake being detected: a blocking call in an async def
        await asyncio.sleep(0)
        return message

    recorder = Recorder()
    async with Pipeline(handle_message=blocking, name="blocking",
                        **push_options(concurrency=1, max_demand=5)) as pipeline:
        pipeline.push_messages(messages(recorder, range(10)))
        await recorder.wait_for(10)
        watchers = [t for t in threading.enumerate() if t.name == "blocking.hold_watch"]
        assert len(watchers) == 1
    warnings = [r.getMessage() for r in caplog.records if "held the event loop" in r.getMessage()]
    assert len(warnings) == 1, warnings
    held = re.search(r"handle_message held the event loop for about ([\d.]+)s between two "
                     r"awaits", warnings[0])
    assert held and 0.4 <= float(held.group(1)) < 2, warnings[0]
    assert "asyncio.to_thread" in warnings[0] and '"executor": "thread"' in warnings[0]
    watchers[0].join(timeout=1)  # the watch ends with the pipeline
    assert not watchers[0].is_alive()


async def test_an_async_handler_that_awaits_is_not_warned_about(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def waiting(processor: str, message: Message, context: Any) -> Message:
        await asyncio.sleep(0.3)  # waits: the loop runs meanwhile
        return message

    def blocking_elsewhere() -> None:
        time.sleep(0.3)  # the loop held, but not by a callback of the pipeline

    recorder = Recorder()
    async with Pipeline(handle_message=waiting,
                        **push_options(concurrency=2, max_demand=1)) as pipeline:
        pipeline.push_messages(messages(recorder, range(4)))
        asyncio.get_running_loop().call_soon(blocking_elsewhere)
        await recorder.wait_for(4)
    assert not [r for r in caplog.records if "held the event loop" in r.getMessage()]


async def test_a_pipeline_of_plain_callbacks_starts_no_watch() -> None:
    recorder = Recorder()
    async with Pipeline(handle_message=lambda p, message, c: message, name="plain",
                        **push_options(concurrency=1, max_demand=10)) as pipeline:
        pipeline.push_messages(messages(recorder, range(10)))
        await recorder.wait_for(10)
        # (named: the watch of an earlier test's pipeline may still be ending)
        assert not [t for t in threading.enumerate() if t.name == "plain.hold_watch"]


def blocking_on(*blocked: int) -> Any:
    async def handle(processor: str, message: Message, context: Any) -> Message:
        if message.data in blocked:
            time.sleep(0.3)  # a blocking call in an async def
        await asyncio.sleep(0)
        return message
    return handle


async def test_a_watch_thread_that_fails_is_restarted_by_the_loop(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    looks = []
    running = HoldWatch._running

    def fails_first(self: HoldWatch, frame: Any) -> str | None:
        looks.append(frame)
        if len(looks) == 1:
            raise RuntimeError("the first look fails")
        return running(self, frame)

    monkeypatch.setattr(HoldWatch, "_running", fails_first)
    recorder = Recorder()
    async with Pipeline(handle_message=blocking_on(3, 7), name="failing",
                        **push_options(concurrency=1, max_demand=1)) as pipeline:
        pipeline.push_messages(messages(recorder, range(10)))
        await recorder.wait_for(10)
    logged = [r.getMessage() for r in caplog.records]
    assert [m for m in logged if "hold watch failed" in m] == [
        "failing: the hold watch failed; the event loop's next beat restarts it"]
    assert [m for m in logged if "handle_message held the event loop" in m]


async def test_a_watch_that_keeps_failing_gives_up_and_says_so(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def fails(self: HoldWatch, frame: Any) -> str | None:
        raise RuntimeError("every look fails")

    monkeypatch.setattr(HoldWatch, "_running", fails)
    recorder = Recorder()
    async with Pipeline(handle_message=blocking_on(*range(0, 12, 2)), name="hopeless",
                        **push_options(concurrency=1, max_demand=1)) as pipeline:
        pipeline.push_messages(messages(recorder, range(12)))
        await recorder.wait_for(12)
        assert not [t for t in threading.enumerate() if t.name == "hopeless.hold_watch"]
    logged = [r.getMessage() for r in caplog.records]
    assert len([m for m in logged if "the hold watch failed;" in m]) == RESTARTS + 1
    assert [m for m in logged if "no longer named" in m] == [
        f"hopeless: the hold watch failed {RESTARTS + 1} times; async def callbacks that "
        "block the event loop are no longer named"]
