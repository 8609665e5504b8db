"""Failures: an exception in any callback fails those messages; the pipeline keeps running."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pybroadway.pipeline import BatchInfo, Message, Pipeline

from .helpers import Passthrough, Recorder, messages, push_options


class Failing(Passthrough):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.failed_seen: list[list[Any]] = []

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        if message.data == "raise":
            raise ValueError("bad message")
        if message.data == "fail":
            return message.failed("rejected")
        if message.data == "none":
            return None  # type: ignore[return-value]
        return message

    def handle_failed(self, failed: list[Message], context: Any) -> list[Message]:
        self.failed_seen.append([m.data for m in failed])
        for message in failed:
            message.metadata["seen_by_handle_failed"] = True
        return failed


async def test_handle_message_failures() -> None:
    recorder = Recorder()
    pipeline = Failing(**push_options(concurrency=1, max_demand=10))
    async with pipeline:
        pipeline.push_messages(messages(recorder, ["ok", "raise", "fail", "none", "ok2"]))
        await recorder.wait_for(5)
        pipeline.push_messages(messages(recorder, ["after"]))
        await recorder.wait_for(6)
    assert [m.data for m in recorder.successful] == ["ok", "ok2", "after"]
    failed = {m.data: m for m in recorder.failed}
    assert failed["fail"].status == ("failed", "rejected")
    kind, error = failed["raise"].status
    assert kind == "error" and isinstance(error, ValueError)
    assert "must return a Message, got: None" in str(failed["none"].status[1])
    assert all(m.metadata["seen_by_handle_failed"] for m in failed.values())
    assert pipeline.failed_seen == [["raise", "fail", "none"]]
    assert pipeline.stats()["failed"] == 3


async def test_coroutine_callbacks_fail_the_same_way() -> None:
    recorder = Recorder()

    class AsyncFailing(Failing):
        async def handle_message(self, processor: str, message: Message,
                                 context: Any) -> Message:
            return Failing.handle_message(self, processor, message, context)

        async def handle_failed(self, failed: list[Message], context: Any) -> list[Message]:
            return Failing.handle_failed(self, failed, context)

    pipeline = AsyncFailing(**push_options(concurrency=1))
    async with pipeline:
        pipeline.push_messages(messages(recorder, ["ok", "raise", "fail"]))
        await recorder.wait_for(3)
    assert [m.data for m in recorder.successful] == ["ok"]
    assert pipeline.failed_seen == [["raise", "fail"]]


async def test_prepare_messages_failure_fails_the_chunk() -> None:
    recorder = Recorder()

    def prepare(batch: list[Message], context: Any) -> list[Message]:
        if any(m.data == "poison" for m in batch):
            raise RuntimeError("cannot prepare")
        return [m.put_data(m.data.upper()) for m in batch]

    pipeline = Passthrough(**push_options(concurrency=1), prepare_messages=prepare)
    async with pipeline:
        pipeline.push_messages(messages(recorder, ["a", "poison"]))
        await recorder.wait_for(2)
        pipeline.push_messages(messages(recorder, ["b"]))
        await recorder.wait_for(3)
    assert [m.data for m in recorder.failed] == ["a", "poison"]
    assert all(isinstance(m.status[1], RuntimeError) for m in recorder.failed)
    assert [m.data for m in recorder.successful] == ["B"]


async def test_handle_batch_failures() -> None:
    recorder = Recorder()

    class Batching(Failing):
        def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                         context: Any) -> list[Message]:
            if any(m.data == "explode" for m in batch):
                raise OSError("store down")
            return [m.failed("partial") if m.data == "reject" else m for m in batch]

    pipeline = Batching(**push_options(concurrency=1),
                        batchers={"default": {"batch_size": 2, "batch_timeout": 20}})
    async with pipeline:
        pipeline.push_messages(messages(recorder, ["explode", "x", "reject", "y", "raise"]))
        await recorder.wait_for(5)
    assert [m.data for m in recorder.successful] == ["y"]
    statuses = {m.data: m.status for m in recorder.failed}
    assert isinstance(statuses["explode"][1], OSError)
    assert isinstance(statuses["x"][1], OSError)
    assert statuses["reject"] == ("failed", "partial")
    assert isinstance(statuses["raise"][1], ValueError)
    handled = sorted(d for seen in pipeline.failed_seen for d in seen)
    assert handled == ["explode", "raise", "reject", "x"]


async def test_unknown_batcher_fails_the_message() -> None:
    recorder = Recorder()

    class Misrouting(Passthrough):
        def handle_message(self, processor: str, message: Message, context: Any) -> Message:
            return message.put_batcher(message.data)

    pipeline = Misrouting(**push_options(concurrency=1),
                          batchers={"default": {"batch_size": 1}})
    async with pipeline:
        pipeline.push_messages(messages(recorder, ["default", "nowhere"]))
        await recorder.wait_for(2)
    assert [m.data for m in recorder.successful] == ["default"]
    [lost] = recorder.failed
    assert str(lost.status[1]) == ("message was set to unknown batcher 'nowhere'; "
                                   "the known batchers are ['default']")


async def test_failures_in_handle_failed_and_acknowledgers_are_contained(caplog: Any) -> None:
    recorder = Recorder()

    class Broken:
        def ack(self, *args: Any) -> None:
            raise RuntimeError("ack broke")

    def handle_failed(failed: list[Message], context: Any) -> list[Message]:
        raise RuntimeError("handle_failed broke")

    pipeline = Failing(**push_options(concurrency=1), handle_failed=handle_failed)
    with caplog.at_level(logging.ERROR, logger="pybroadway.pipeline"):
        async with pipeline:
            pipeline.push_messages([Message("ok", None, (Broken(), None, None))])
            pipeline.push_messages(messages(recorder, ["raise", "ok"]))
            await recorder.wait_for(2)
    assert [m.data for m in recorder.failed] == ["raise"]
    assert "handle_failed raised" in caplog.text and "ack broke" in caplog.text


async def test_failures_speak(caplog: Any) -> None:
    """A raising handle_message is logged with its traceback, as Broadway does (the first few
    of a kind: see test_callback_log); a forgotten return is logged once, however many
    messages it fails; a raising handle_batch is logged with its traceback."""
    caplog.set_level(logging.ERROR, logger="pybroadway.pipeline")
    recorder = Recorder()
    pipeline = Failing(**push_options(concurrency=1, max_demand=10))
    async with pipeline:
        pipeline.push_messages(messages(recorder, ["raise", "none", "none", "raise"]))
        await recorder.wait_for(4)
    raised = [r for r in caplog.records if "handle_message raised ValueError" in r.getMessage()]
    assert len(raised) == 2 and all(r.exc_info for r in raised)
    missing = [r for r in caplog.records if "a missing return?" in r.getMessage()]
    assert len(missing) == 1

    class BadBatch(Pipeline):
        def handle_message(self, processor: str, message: Message, context: Any) -> Message:
            return message.put_batcher("default")

        def handle_batch(self, batcher: Any, batch: list[Message], info: Any,
                         context: Any) -> list[Message]:
            raise RuntimeError("the database is down")

    caplog.clear()
    recorder = Recorder()
    pipeline = BadBatch(**push_options(concurrency=1),
                        batchers={"default": {"batch_size": 2}})
    async with pipeline:
        pipeline.push_messages(messages(recorder, ["a", "b"]))
        await recorder.wait_for(2)
    assert len(recorder.failed) == 2
    logged = [r for r in caplog.records if "handle_batch of default raised RuntimeError"
              in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info


async def test_plain_data_pushed_where_messages_are_wanted_is_refused_at_once() -> None:
    recorder = Recorder()
    pipeline = Passthrough(**push_options())
    async with pipeline:
        with pytest.raises(TypeError, match=r"got int 1: wrap the data in Message\(data, "
                                             r"acknowledger=\.\.\.\) or give the producer a "
                                             r"transformer"):
            pipeline.push_messages([1, 2, 3])
        # the pipeline is unharmed: messages still go through
        pipeline.push_messages(messages(recorder, range(3)))
        await recorder.wait_for(3)
    assert pipeline.stats()["handled"] == 3
