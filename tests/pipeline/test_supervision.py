"""Stages are supervised: a crashed stage is restarted, what it held fails through its
acknowledger (nothing is dropped), and past max_restarts the pipeline stops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pybroadway.errors import ArgumentError, StateError
from pybroadway.pipeline import (
    BatchInfo,
    Message,
    OptionsError,
    Pipeline,
    Producer,
    StageCrashed,
    kill_stage,
)
from testkit.wait import eventually_async

from .helpers import Recorder, messages, push_options

WAIT = 5.0


class Gated(Pipeline):
    """handle_message / handle_batch wait for ``gate`` while ``hold`` says so; ``busy`` is
    set once one of them waits."""

    def __init__(self, hold: str, **options: Any) -> None:
        super().__init__(**options)
        self.hold = hold
        self.gate = asyncio.Event()
        self.busy = asyncio.Event()

    async def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        if self.hold == "processor" and not self.gate.is_set():
            self.busy.set()
            await self.gate.wait()
        return message

    async def handle_batch(self, batcher: Any, batch: list[Message], info: BatchInfo,
                           context: Any) -> list[Message]:
        if self.hold == "batch_processor" and not self.gate.is_set():
            self.busy.set()
            await self.gate.wait()
        return batch


def crashed(recorder: Recorder) -> list[Any]:
    return [m.data for m in recorder.failed if isinstance(m.status[1], StageCrashed)]


BATCHERS = {"default": {"batch_size": 5, "batch_timeout": 60000, "concurrency": 1}}


@pytest.mark.parametrize(("kind", "hold", "batchers", "held"), [
    # the processor holds its chunk (5) and what it was given meanwhile (none: it asked 5)
    ("processor", "processor", {}, range(5)),
    # the batch processor holds its batch of 5
    ("batch_processor", "batch_processor", BATCHERS, range(5)),
    # the batcher holds 3 messages in a batch not yet full
    ("batcher", "", {"default": {"batch_size": 100, "batch_timeout": 60000}}, range(3)),
    # the producer holds what the processor (stuck on its first 5) did not take
    ("producer", "processor", {}, range(5, 12)),
])
async def test_a_killed_stage_fails_what_it_held_and_is_restarted(
        kind: str, hold: str, batchers: dict[str, Any], held: range) -> None:
    recorder = Recorder()
    pipeline = Gated(hold, **push_options(concurrency=1, max_demand=5), batchers=batchers)
    async with pipeline:
        first = 12 if kind == "producer" else len(held)
        pipeline.push_messages(messages(recorder, range(first)))
        if hold:
            await asyncio.wait_for(pipeline.busy.wait(), WAIT)
        else:
            await eventually_async(lambda: pipeline.stage_stats()["batchers"][0]["queued"] == 3)
        kill_stage(pipeline, kind)  # type: ignore[arg-type]
        await recorder.wait_for(len(held), WAIT)
        assert sorted(crashed(recorder)) == list(held)
        assert pipeline.stats()["restarts"] == 1
        pipeline.gate.set()
        # it works again: new messages go through it
        pipeline.push_messages(messages(recorder, range(100, 200)))
        await recorder.wait_for(first + 100, WAIT)
    assert sorted(m.data for m in recorder.successful) == sorted(
        [*(set(range(first)) - set(held)), *range(100, 200)])
    assert len(recorder.failed) == len(held)
    stats = pipeline.stats()
    assert (stats["handled"] + stats["failed"], stats["in_flight"]) == (first + 100, 0)


async def test_a_killed_pull_producer_is_asked_again_for_what_the_processors_wait_for() -> None:
    asked: list[int] = []

    class Pulled(Producer):
        mode = "pull"

        def handle_demand(self, demand: int) -> None:
            asked.append(demand)  # answers never come: the demand stays owed

    pipeline = Gated("", producer={"module": Pulled},
                     processors={"default": {"concurrency": 2, "max_demand": 4}})
    async with pipeline:
        await eventually_async(lambda: len(asked) == 2)
        assert asked == [4, 4]
        kill_stage(pipeline, "producer")
        assert asked == [4, 4, 4, 4]  # the new incarnation owes what the processors wait for
        assert pipeline.producers[0].pending_demand == 8


@pytest.mark.parametrize("coroutine", [False, True])
async def test_a_handle_demand_that_raises_crashes_its_producer_which_is_asked_again(
        coroutine: bool) -> None:
    """As a GenStage producer's: what it buffered fails, and the new incarnation is asked
    for what the processors wait for (before, the demand stayed owed and nothing came)."""
    asked: list[int] = []
    recorder = Recorder()

    class Flaky(Producer):
        mode = "pull"

        def answer(self, demand: int) -> list[Message]:
            asked.append(demand)
            if len(asked) == 2:  # the source failed for a moment
                raise ConnectionError("the source is down")
            return messages(recorder, range(len(asked) * 100, len(asked) * 100 + demand))

        if coroutine:
            async def handle_demand(self, demand: int) -> list[Message]:
                return self.answer(demand)
        else:
            def handle_demand(self, demand: int) -> list[Message]:
                return self.answer(demand)

    pipeline = Gated("", producer={"module": Flaky},
                     processors={"default": {"concurrency": 1, "max_demand": 4}})
    async with pipeline:
        await recorder.wait_for(12, WAIT)
        assert pipeline.stats()["restarts"] == 1
    assert not recorder.failed
    assert asked[:3] == [4, 4, 4]  # the one that raised is asked of the next incarnation


async def test_past_max_restarts_the_pipeline_stops_and_fails_what_it_held() -> None:
    recorder = Recorder()
    pipeline = Gated("processor", **push_options(concurrency=1, max_demand=5),
                     max_restarts=1, max_seconds=60)
    await pipeline.start()
    pipeline.push_messages(messages(recorder, range(20)))
    await asyncio.wait_for(pipeline.busy.wait(), WAIT)
    kill_stage(pipeline, "processor")
    pipeline.busy.clear()
    await asyncio.wait_for(pipeline.busy.wait(), WAIT)  # restarted, stuck on the next 5
    kill_stage(pipeline, "processor")
    why = await asyncio.wait_for(pipeline.wait_failure(), WAIT)
    assert "crashed more than 1 times" in why and "processor 0" in why
    await recorder.wait_for(20, WAIT)  # it stopped by itself: everything acknowledged
    assert sorted(crashed(recorder)) == list(range(10))
    assert sorted(m.data for m in recorder.failed if m.status == ("failed", "shutdown")) \
        == list(range(10, 20))
    await pipeline.stop()  # a second stop waits for the first
    assert pipeline.stats()["in_flight"] == 0


async def test_a_batcher_partition_by_that_raises_fails_its_message_not_the_processor() -> None:
    recorder = Recorder()

    def by_data(message: Message) -> int:
        if message.data == 3:
            raise ValueError("no partition for 3")
        return int(message.data)

    pipeline = Gated("", **push_options(concurrency=1), batchers={"default": {
        "batch_size": 10, "batch_timeout": 10, "concurrency": 2, "partition_by": by_data}})
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(10)))
        await recorder.wait_for(10, WAIT)
        pipeline.push_messages(messages(recorder, range(10, 20)))  # the processor still runs
        await recorder.wait_for(20, WAIT)
    assert [(m.data, str(m.status[1])) for m in recorder.failed] == [(3, "no partition for 3")]
    assert pipeline.stats()["restarts"] == 0


async def test_kill_stage_names_what_the_pipeline_has() -> None:
    pipeline = Gated("", **push_options(concurrency=2))
    with pytest.raises(StateError, match="not running"):
        kill_stage(pipeline, "processor")
    async with pipeline:
        with pytest.raises(ArgumentError, match=r"no batcher 0 .* 2 processor, 0 batcher"):
            kill_stage(pipeline, "batcher")
        with pytest.raises(ArgumentError, match="no processor 2"):
            kill_stage(pipeline, "processor", 2)


@pytest.mark.parametrize(("options", "message"), [
    ({"max_restarts": -1}, "invalid value for :max_restarts option: expected non negative"),
    ({"max_seconds": 0}, "invalid value for :max_seconds option: expected positive number"),
    ({"offload": "workers"}, "invalid value for :offload option: expected an offload class"),
    ({"offload": (dict, {})}, "invalid value for :offload option: expected an offload class"),
])
def test_supervision_and_offload_options_are_checked(options: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        Gated("", **push_options(), **options)
