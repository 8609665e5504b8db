"""Telemetry events with durations and counts; stats() snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from pybroadway.pipeline import subscribe, telemetry

from .helpers import Failing, Passthrough, Recorder, messages, push_options


async def test_processor_and_batch_processor_events() -> None:
    events: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []

    def record(event: tuple[str, ...], measurements: dict[str, Any],
               metadata: dict[str, Any]) -> None:
        events.append((event, measurements, metadata))

    names = [("broadway", "processor", "start"), ("broadway", "processor", "stop"),
             ("broadway", "processor", "message", "exception"),
             ("broadway", "batch_processor", "start"), ("broadway", "batch_processor", "stop"),
             ("broadway", "batch_processor", "exception"), ("broadway", "topology", "init")]
    unsubscribe = subscribe(names, record)
    try:
        recorder = Recorder()
        pipeline = Failing(**push_options(concurrency=1, max_demand=10), name="Observed",
                           batchers={"default": {"batch_size": 5, "batch_timeout": 10}})
        async with pipeline:
            pipeline.push_messages(messages(recorder, range(10)))
            await recorder.wait_for(10)
    finally:
        unsubscribe()
    assert telemetry.handlers == {}
    kinds = [event[1:] for event, _, _ in events]
    assert kinds[0] == ("topology", "init")
    assert kinds.count(("processor", "start")) == kinds.count(("processor", "stop")) >= 1
    stops = [(m, md) for e, m, md in events if e == ("broadway", "processor", "stop")]
    assert sum(m["successful"] for m, _ in stops) == 9
    assert sum(m["failed"] for m, _ in stops) == 1
    assert all(m["duration"] >= 0 and md["name"] == "Observed" for m, md in stops)
    [(_, _, exception)] = [e for e in events if e[0][-1] == "exception" and e[0][1] == "processor"]
    assert exception["message"].data == 3 and isinstance(exception["error"], ValueError)
    batch_stops = [(m, md) for e, m, md in events if e == ("broadway", "batch_processor", "stop")]
    assert sorted((m["successful"], m["failed"]) for m, _ in batch_stops) == [(0, 4), (5, 0)]
    assert all(md["batch_info"].batcher == "default" for _, md in batch_stops)
    [(_, _, batch_error)] = [e for e in events if e[0] == ("broadway", "batch_processor",
                                                            "exception")]
    assert isinstance(batch_error["error"], KeyError)


async def test_a_failing_handler_is_detached(caplog: Any) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("handler bug")

    subscribe(("broadway", "processor", "start"), broken)
    recorder = Recorder()
    async with Passthrough(**push_options(concurrency=1)) as pipeline:
        pipeline.push_messages(messages(recorder, range(3)))
        await recorder.wait_for(3)
    assert telemetry.handlers == {}
    assert "handler bug" in caplog.text


async def test_stats_snapshot() -> None:
    recorder = Recorder()
    pipeline = Failing(**push_options(concurrency=2), batchers={"default": {"batch_size": 1}})
    assert pipeline.stats()["handled"] == 0
    async with pipeline:
        pipeline.push_messages(messages(recorder, range(6)))
        stats = pipeline.stats()
        assert stats["buffered"] + stats["in_flight"] == 6
        await recorder.wait_for(6)
        stats = pipeline.stats()
    assert (stats["handled"], stats["failed"], stats["in_flight"], stats["buffered"]) == (
        5, 1, 0, 0)
    assert stats["rate"] > 0
    # a second reader right after the first sees the same rate: reading changes nothing
    # (the status line and the metrics both read it)
    assert pipeline.stats()["rate"] == pytest.approx(stats["rate"], rel=0.5)
