"""What the callbacks do wrong is logged so that a flood cannot multiply it: the first failures
of a kind with their traceback, then a count; a wrong return value is one line naming the
callback; a plain callback that holds the event loop is warned about once, and the processors
let the loop's other tasks run while a slow one works."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import pytest

from pybroadway.pipeline import Message, Pipeline, Producer

from .helpers import Recorder, messages, push_options

LOGGER = "pybroadway.pipeline"


def counted(records: list[logging.LogRecord]) -> int:
    """The sum of the "and N more like it" lines."""
    found = (re.search(r"and ([\d,]+) more like it", r.getMessage()) for r in records)
    return sum(int(match.group(1).replace(",", "")) for match in found if match)


class Raising(Pipeline):
    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        raise ValueError(f"cannot handle {message.data}")


async def test_a_handler_raising_on_5000_messages_logs_a_few_lines_and_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    recorder = Recorder()
    pipeline = Raising(**push_options(concurrency=2, max_demand=50))
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(5000)))
        await recorder.wait_for(5000)
    assert len(recorder.failed) == 5000
    records = [r for r in caplog.records if "handle_message raised ValueError" in r.getMessage()]
    in_full = [r for r in records if r.exc_info]
    assert 1 <= len(in_full) <= 3, [r.getMessage() for r in records]
    assert len(caplog.records) <= 10, [r.getMessage() for r in caplog.records]
    # every failure is either logged in full or counted (the stop reports what is pending)
    assert len(in_full) + counted(records) == 5000
    assert all(r.exc_info is None or r in in_full for r in caplog.records)


def _rejecting(processor: str, message: Message, context: Any) -> Message:
    return message.failed("rejected")


def _to_batcher(processor: str, message: Message, context: Any) -> Message:
    return message.put_batcher("default")


def _wrong(*args: Any) -> Any:
    return None


def _raise(*args: Any) -> Any:
    raise LookupError("broken")


def _setup(callback: str, bad: Any) -> dict[str, Any]:
    """Pipeline keyword arguments whose ``callback`` is ``bad``, with what makes it run
    several times (a few chunks of failed messages, a few batches)."""
    options: dict[str, Any] = {**push_options(concurrency=1, max_demand=2),
                               "handle_message": _to_batcher}
    if callback == "handle_batch":
        options["batchers"] = {"default": {"batch_size": 2}}
    elif callback == "handle_failed":
        options["handle_message"] = _rejecting
    options[callback] = bad
    return options


@pytest.mark.parametrize("callback", ["handle_message", "prepare_messages", "handle_batch",
                                      "handle_failed"])
async def test_a_wrong_return_is_one_line_naming_the_callback(
        callback: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    recorder = Recorder()
    async with Pipeline(**_setup(callback, _wrong)) as pipeline:
        pipeline.push_messages(messages(recorder, range(10)))
        await recorder.wait_for(10)
    assert len(recorder.failed) == 10
    lines = [r for r in caplog.records if f"{callback} must return" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "got: None (a missing return?)" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "no traceback into pybroadway"


async def test_handle_demand_returning_no_messages_is_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    asked = asyncio.Event()

    class Wrong(Producer):
        mode = "pull"

        def handle_demand(self, demand: int) -> Any:
            asked.set()
            return 42 if self.name.endswith("_0") else [1, 2, 3]

    options = push_options(concurrency=3)
    options["producer"] = {"module": Wrong, "concurrency": 2}
    async with Pipeline(handle_message=_to_batcher, **options):
        await asyncio.wait_for(asked.wait(), 5)
    lines = [r.getMessage() for r in caplog.records
             if "handle_demand must return" in r.getMessage()]
    assert len(lines) == 2, [r.getMessage() for r in caplog.records]  # one per kind returned
    assert any("got: 42" in line for line in lines) and any("got: [1, 2, 3]" in line
                                                           for line in lines)
    assert not [r for r in caplog.records if r.exc_info], "no traceback into pybroadway"


@pytest.mark.parametrize("callback", ["prepare_messages", "handle_batch", "handle_failed"])
async def test_every_callback_raising_often_logs_its_first_tracebacks_then_counts(
        callback: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    recorder = Recorder()
    async with Pipeline(**_setup(callback, _raise)) as pipeline:
        pipeline.push_messages(messages(recorder, range(40)))
        await recorder.wait_for(40)
    records = [r for r in caplog.records if "LookupError" in r.getMessage()]
    in_full = [r for r in records if r.exc_info]
    assert len(in_full) == 3 and all(callback in r.getMessage() for r in records)
    first_frames = [logging.Formatter().formatException(r.exc_info).splitlines()[1]
                    for r in in_full if r.exc_info]
    assert all("pybroadway/pipeline" not in line for line in first_frames), first_frames
    assert len(in_full) + counted(records) > 3
    assert len(caplog.records) <= 6, [r.getMessage() for r in caplog.records]


async def test_handle_demand_raising_on_every_demand_logs_a_few_tracebacks_then_stops(
        caplog: pytest.LogCaptureFixture) -> None:
    """Each raise crashes the producer (as a GenStage producer's): restarted, asked again,
    until max_restarts, when the pipeline stops; the tracebacks stay few."""
    caplog.set_level(logging.INFO, logger=LOGGER)

    class Down(Producer):
        mode = "pull"
        demands = 0

        def handle_demand(self, demand: int) -> Any:
            Down.demands += 1
            raise ConnectionError("the source is down")

    options = {**push_options(concurrency=10), "producer": {"module": Down}}
    pipeline = Pipeline(handle_message=_to_batcher, **options, max_restarts=3)
    await pipeline.start()
    why = await asyncio.wait_for(pipeline.wait_failure(), 5)
    await pipeline.stop()
    assert "handle_demand raised ConnectionError" in why and "the source is down" in why
    # one demand a crash (the other processors' wait for the next incarnation), the first
    # incarnation's included, and the one the last restart asked before the pipeline stopped
    assert Down.demands == 5
    records = [r for r in caplog.records
               if "handle_demand" in r.getMessage() and "ConnectionError" in r.getMessage()]
    assert len([r for r in records if r.exc_info]) == 3
    assert len(caplog.records) <= 12, [r.getMessage() for r in caplog.records]


async def test_a_plain_handler_that_holds_the_loop_is_warned_about_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def sleepy(processor: str, message: Message, context: Any) -> Message:
        time.sleep(0.03)  # the mistake being detected: a blocking call in a plain def
        return message

    recorder = Recorder()
    async with Pipeline(handle_message=sleepy,
                        **push_options(concurrency=1, max_demand=5)) as pipeline:
        pipeline.push_messages(messages(recorder, range(20)))
        await recorder.wait_for(20)
    warnings = [r.getMessage() for r in caplog.records if "held the event loop" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "handle_message held the event loop" in warnings[0]
    assert "async def" in warnings[0] and '"executor": "thread"' in warnings[0]
    assert "--workers" in warnings[0]


async def test_a_fast_plain_handler_is_not_warned_about(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    recorder = Recorder()
    async with Pipeline(handle_message=lambda p, message, c: message,
                        **push_options(concurrency=1, max_demand=10)) as pipeline:
        pipeline.push_messages(messages(recorder, range(2000)))
        await recorder.wait_for(2000)
    assert not [r for r in caplog.records if "held the event loop" in r.getMessage()]


async def test_other_tasks_run_while_a_slow_plain_handler_works() -> None:
    """The processor lets the loop run other tasks (a push, a signal handler) every so often,
    not only every 1,024 messages."""

    def slow(processor: str, message: Message, context: Any) -> Message:
        time.sleep(0.01)
        return message

    recorder = Recorder()
    async with Pipeline(handle_message=slow,
                        **push_options(concurrency=1, max_demand=10)) as pipeline:
        pipeline.push_messages(messages(recorder, range(200)))  # 2 s of loop-holding work
        pushed = time.monotonic()
        ran = asyncio.Event()
        asyncio.get_running_loop().call_soon(ran.set)
        await asyncio.wait_for(ran.wait(), 10)
        waited = time.monotonic() - pushed
        assert recorder.count < 200, "the other task ran only once the work was done"
        assert waited < 1.0


class _RaisingAcknowledger(Recorder):
    """Records what it is given, then raises: an acknowledger whose broker is down."""

    def ack(self, ack_ref: Any, successful: list[Message], failed: list[Message]) -> None:
        super().ack(ack_ref, successful, failed)
        raise ConnectionError("the broker is down")


class _AsyncRaisingAcknowledger(Recorder):
    """The same, as an acknowledger whose ack is a coroutine."""

    async def ack(self, ack_ref: Any, successful: list[Message],  # type: ignore[override]
                  failed: list[Message]) -> None:
        super().ack(ack_ref, successful, failed)
        raise ConnectionError("the broker is down")


@pytest.mark.parametrize("kind", [_RaisingAcknowledger, _AsyncRaisingAcknowledger])
async def test_an_acknowledger_raising_on_every_ack_logs_a_few_tracebacks_then_a_count(
        kind: type[Recorder], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    acknowledger = kind()
    async with Pipeline(handle_message=lambda p, message, c: message,
                        **push_options(concurrency=2, max_demand=1)) as pipeline:
        pipeline.push_messages(messages(acknowledger, range(500)))
        await acknowledger.wait_for(500)
        pipeline.push_messages(messages(acknowledger, range(500, 510)))
        await acknowledger.wait_for(510)  # it goes on handling after all those failures
    assert sorted(m.data for m in acknowledger.successful) == list(range(510))
    assert len(acknowledger.calls) > 100  # acked a few at a time: many failures
    records = [r for r in caplog.records if "ConnectionError" in r.getMessage()]
    in_full = [r for r in records if r.exc_info]
    assert len(in_full) == 3, [r.getMessage() for r in caplog.records][:10]
    assert f"{kind.__qualname__}.ack raised ConnectionError" in in_full[0].getMessage()
    assert len(caplog.records) <= 6, [r.getMessage() for r in caplog.records][:10]
    assert len(in_full) + counted(records) == len(acknowledger.calls)

