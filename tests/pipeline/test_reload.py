"""``Pipeline.reload``: a successor's callbacks and options take over a running pipeline; the
producers, their buffers and the counters carry on; what cannot change is refused and the
running version goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pybroadway.errors import StateError
from pybroadway.pipeline import BatchInfo, Message, OptionsError, Pipeline, Producer
from testkit.wait import eventually_async
from tests.pipeline.helpers import Recorder, messages, push_options


def tagging(version: str) -> Any:
    def handle_message(processor: str, message: Message, context: Any) -> Message:
        message.data = (version, message.data)
        return message
    return handle_message


def batching(seen: list[tuple[Any, list[Any]]]) -> Any:
    def handle_batch(batcher: Any, batch: list[Message], info: BatchInfo,
                     context: Any) -> list[Message]:
        seen.append((batcher, [message.data for message in batch]))
        return batch
    return handle_batch


async def test_reload_swaps_the_code_and_keeps_buffer_counters_and_producer() -> None:
    recorder = Recorder()
    pipeline = Pipeline(handle_message=tagging("v1"), version="v1", **push_options())
    async with pipeline:
        producer = pipeline.producers[0]
        pipeline.push_messages(messages(recorder, range(100)))
        await recorder.wait_for(100)
        await pipeline.reload(Pipeline(handle_message=tagging("v2"), version="v2",
                                       **push_options(concurrency=3)))
        assert pipeline.producers == [producer]
        assert len(pipeline.topology()["processors"]) == 1
        assert pipeline.topology()["processors"][0]["concurrency"] == 3
        pipeline.push_messages(messages(recorder, range(100, 200)))
        await recorder.wait_for(200)
        stats = pipeline.stats()
    assert sorted(m.data for m in recorder.successful) == (
        [("v1", n) for n in range(100)] + [("v2", n) for n in range(100, 200)])
    assert (stats["handled"], stats["in_flight"], stats["version"], stats["reloads"]) == (
        200, 0, "v2", 1)


async def test_what_the_old_batchers_hold_is_flushed_by_the_old_code() -> None:
    recorder = Recorder()
    old_batches: list[tuple[Any, list[Any]]] = []
    new_batches: list[tuple[Any, list[Any]]] = []
    batchers = {"default": {"batch_size": 1000, "batch_timeout": 60_000}}
    pipeline = Pipeline(handle_message=tagging("v1"), handle_batch=batching(old_batches),
                        batchers=batchers, **push_options())
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(10)))
        await eventually_async(lambda: pipeline.stage_stats()["batchers"][0]["queued"] == 10)
        await pipeline.reload(Pipeline(handle_message=tagging("v2"),
                                       handle_batch=batching(new_batches),
                                       batchers=batchers, **push_options()))
        assert recorder.count == 10  # flushed by the reload, not after a minute
        pipeline.push_messages(messages(recorder, range(10, 15)))
    assert sorted(data for _, batch in old_batches for data in batch) == [
        ("v1", n) for n in range(10)]
    assert sorted(data for _, batch in new_batches for data in batch) == [
        ("v2", n) for n in range(10, 15)]


async def test_a_changed_producer_is_refused_and_the_old_version_runs_on() -> None:
    recorder = Recorder()
    pipeline = Pipeline(handle_message=tagging("v1"), **push_options())
    async with pipeline:
        other = {"producer": {"module": (Producer, {"buffer_size": 10})},
                 "processors": {"default": {}}}
        with pytest.raises(OptionsError, match="a reload keeps the producers: their module"):
            await pipeline.reload(Pipeline(handle_message=tagging("v2"), **other))
        pipeline.push_messages(messages(recorder, range(5)))
        await recorder.wait_for(5)
        assert pipeline.stats()["reloads"] == 0
    assert {m.data[0] for m in recorder.successful} == {"v1"}


async def test_a_started_successor_or_a_stopped_pipeline_is_refused() -> None:
    pipeline = Pipeline(handle_message=tagging("v1"), **push_options())
    async with Pipeline(handle_message=tagging("v2"), **push_options()) as started, pipeline:
        with pytest.raises(StateError, match="started already"):
            await pipeline.reload(started)
    with pytest.raises(StateError, match="stopping"):
        await pipeline.reload(Pipeline(handle_message=tagging("v3"), **push_options()))


async def test_failures_are_watched_in_the_new_version() -> None:
    pipeline = Pipeline(handle_message=tagging("v1"), max_restarts=0, **push_options())
    async with pipeline:
        await pipeline.reload(Pipeline(handle_message=tagging("v2"), max_restarts=0,
                                       **push_options()))
        waiting = pipeline.wait_failure()
        pipeline._running().supervisor.kill(pipeline._running().processors[0])
        assert "crashed more than 0 times" in await waiting


def test_the_default_version_is_a_hash_of_the_class_file() -> None:
    version = Pipeline(handle_message=tagging("v1"), **push_options()).options["version"]
    assert len(version) == 12 and int(version, 16) >= 0



def sleeping(seconds: float) -> Any:
    async def handle_message(processor: str, message: Message, context: Any) -> Message:
        await asyncio.sleep(seconds)
        return message
    return handle_message


async def test_a_stop_waits_for_a_reload_under_way() -> None:
    recorder = Recorder()
    pipeline = Pipeline(handle_message=sleeping(0.1), **push_options())
    await pipeline.start()
    pipeline.push_messages(messages(recorder, range(4)))
    await eventually_async(lambda: pipeline.stats()["buffered"] == 0)
    reload = asyncio.create_task(pipeline.reload(
        Pipeline(handle_message=tagging("v2"), **push_options())))
    await eventually_async(lambda: pipeline._reloading.locked())
    await pipeline.stop()
    assert reload.done() and reload.exception() is None
    assert (pipeline.stats()["handled"], pipeline.stats()["reloads"]) == (4, 1)
    assert {m.data for m in recorder.successful} == set(range(4))  # the old code handled them


async def test_stop_now_cuts_a_reload_under_way() -> None:
    recorder = Recorder()
    pipeline = Pipeline(handle_message=sleeping(3600), **push_options())
    await pipeline.start()
    pipeline.push_messages(messages(recorder, range(2)))
    await eventually_async(lambda: pipeline.stats()["buffered"] == 0)
    reload = asyncio.create_task(pipeline.reload(
        Pipeline(handle_message=tagging("v2"), **push_options())))
    await eventually_async(lambda: pipeline._reloading.locked())
    async with asyncio.timeout(5):
        await pipeline.stop_now()
        await reload
    assert pipeline.stats()["failed"] == 2
    pipeline.push_messages(messages(recorder, [99]))  # the new version was stopped too
    assert [m.status for m in recorder.failed if m.data == 99] == [("failed", "shutdown")]
    with pytest.raises(StateError, match="stopping"):
        await pipeline.reload(Pipeline(handle_message=tagging("v3"), **push_options()))


class Elsewhere:
    """An offload that takes messages and never answers; a reload rolls it."""

    window = 10

    @staticmethod
    def validate_options(options: Any) -> dict[str, Any]:
        return dict(options)

    def __init__(self, options: dict[str, Any], setup: Any) -> None:
        self.stopped = asyncio.Event()
        self.rolled: list[Any] = []

    async def start(self, processors: Any) -> None:
        pass

    def send(self, partition: int, entries: list[Any]) -> None:
        pass

    async def stop(self) -> None:
        self.stopped.set()

    def stats(self) -> list[dict[str, Any]]:
        return []

    async def failed(self) -> str:
        await self.stopped.wait()
        return "stopped"

    async def roll(self, options: Any) -> None:
        self.rolled.append(options["version"])


async def test_an_offload_is_rolled_and_cannot_change() -> None:
    pipeline = Pipeline(handle_message=tagging("v1"), offload=(Elsewhere, {}), shutdown=100,
                        version="v1", **push_options())
    async with pipeline:
        offload = pipeline.offloaded()
        assert isinstance(offload, Elsewhere)
        with pytest.raises(OptionsError, match="a reload keeps the offload: it cannot come"):
            await pipeline.reload(Pipeline(handle_message=tagging("v2"),
                                           offload=(Elsewhere, {"more": 1}), **push_options()))
        with pytest.raises(OptionsError, match="the processors' concurrency and partition_by"):
            await pipeline.reload(Pipeline(handle_message=tagging("v2"),
                                           offload=(Elsewhere, {}),
                                           **push_options(concurrency=3)))
        assert offload.rolled == [] and pipeline.stats()["reloads"] == 0
        await pipeline.reload(Pipeline(handle_message=tagging("v2"), offload=(Elsewhere, {}),
                                       version="v2", **push_options()))
        assert pipeline.offloaded() is offload and offload.rolled == ["v2"]
        assert (pipeline.stats()["version"], pipeline.stats()["reloads"]) == ("v2", 1)


class Silent(Producer):
    """A pull producer whose source never answers: what is owed only adds up."""

    mode = "pull"

    def handle_demand(self, demand: int) -> None:
        return None


async def test_pull_demand_the_old_processors_left_unmet_is_not_asked_twice() -> None:
    options = {"producer": {"module": (Silent, {})},
               "processors": {"default": {"concurrency": 2, "max_demand": 10}}}
    pipeline = Pipeline(handle_message=tagging("v1"), **options)
    async with pipeline:
        producer = pipeline.producers[0]
        await eventually_async(lambda: producer.pending_demand == 20)
        await pipeline.reload(Pipeline(handle_message=tagging("v2"), **options))
        await eventually_async(lambda: pipeline.stage_stats()["processors"][0]["demand"] == 20)
        assert producer.pending_demand == 20  # the new processors' 20, not 20 more
