"""A pipeline fed by Python GenStage producers on other nodes, no Erlang anywhere: events in
order with their producer in the metadata, never more in hand than asked for, several
producers, a producer that dies and comes back, draining on stop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from pybroadway.erldist.stages import ProducerStage, StageStopped
from pybroadway.gen_stage import GenStageProducer, expose, parse_source
from pybroadway.term import Atom
from testkit.peers import free_port, unique_name
from testkit.wait import eventually_async
from tests.erldist.stages_kit import Recorder, nodes
from tests.gen_stage.helpers import WAIT, pipeline


@pytest.fixture(autouse=True)
def no_erlang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")


async def test_events_become_messages_within_demand() -> None:
    async with nodes(free_port()) as (a, b):
        name = unique_name("events")
        stage = a.spawn(ProducerStage(), name=name)
        async with pipeline(b, [(name, a.name.name, {"max_demand": 100})]) as (
                _, handled, producer):
            # the Python producer only ever has what was asked for: nothing waits in the
            # pipeline's buffer beyond max_demand
            highest = 0

            def watch(count: int, on_taken: Any = producer.on_taken) -> None:
                nonlocal highest
                highest = max(highest, producer.buffered + count)
                on_taken(count)

            producer.on_taken = watch  # type: ignore[method-assign]
            await asyncio.wait_for(stage.emit(range(5000)), WAIT)
            await handled.wait(5000)
            assert sorted(handled.data) == list(range(5000))
            assert handled.metadata[0] == {"producer": stage.pid, "node": a.name,
                                           "name": Atom(name)}
            assert highest <= 100
            subscription = next(iter(producer.subscriber.subscriptions.values()))
            assert subscription.exceeded == 0
            await eventually_async(lambda: stage.asked - stage.dispatched
                                   == subscription.pending)
            assert stage.dispatched == 5000 <= stage.asked <= 5000 + 100


async def test_several_producers_and_one_that_restarts(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway.gen_stage")
    async with nodes(free_port(), 3) as (a, b, c):
        first, second = unique_name("one"), unique_name("two")
        one = a.spawn(ProducerStage(), name=first)
        two = c.spawn(ProducerStage(), name=second)
        async with pipeline(b, [(first, a.name.name, {"max_demand": 10}),
                                (second, c.name.name)]) as (_, handled, producer):
            await eventually_async(lambda: one.subscribers and two.subscribers)
            await one.emit([("one", i) for i in range(50)])
            await two.emit([("two", i) for i in range(50)])
            await handled.wait(100)
            one.exit(Atom("crashed"))  # comes back under the same name: subscribed again
            await one.wait()
            # away for a while: attempt after attempt, said once
            await eventually_async(lambda: producer.subscriptions_made >= 5, timeout=WAIT)
            again = a.spawn(ProducerStage(), name=first)
            await eventually_async(lambda: again.subscribers, timeout=WAIT)
            await again.emit([("again", i) for i in range(30)])
            await handled.wait(130)
            assert [d for d in handled.data if d[0] == b"again"] == [
                (b"again", i) for i in range(30)]
            assert len(handled.data) == len(set(handled.data)) == 130
            assert producer.subscriptions_made >= 3
        said = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.INFO and first in r.getMessage()]
        assert sum("subscribing again" in line for line in said) == 1, said
        assert sum(" is back (after " in line for line in said) == 1, said


async def test_node_down_is_survived() -> None:
    async with nodes(free_port(), 2) as (a, b):
        name = unique_name("events")
        stage = a.spawn(ProducerStage(), name=name)
        async with pipeline(b, [(name, a.name.name)]) as (_, handled, producer):
            await stage.emit(range(10))
            await handled.wait(10)
            b.disconnect(a.name)
            # noconnection ends the subscription; the next attempt connects again
            await eventually_async(lambda: producer.subscriptions_made >= 2, timeout=WAIT)
            await eventually_async(lambda: stage.subscribers, timeout=WAIT)
            await stage.emit(range(10, 20))
            await handled.wait(20)
            assert sorted(handled.data) == list(range(20))


async def test_stop_cancels_and_handles_what_was_sent() -> None:
    async with nodes(free_port()) as (a, b):
        name = unique_name("events")
        stage = a.spawn(ProducerStage(), name=name)
        async with pipeline(b, [(name, a.name.name, {"max_demand": 500})]) as (
                running, handled, _):
            await stage.emit(range(2000))
            await handled.wait(1)
        stats = running.stats()
        assert stats["failed"] == 0
        assert stats["handled"] == len(handled.data) == stage.dispatched
        assert stage.subscribers == {}


def test_subscribe_to_entries_are_checked() -> None:
    assert parse_source(("events", "app@host")).options.max_demand == 1000
    assert parse_source(("events", "app@host", {"max_demand": 5})).options.low == 2
    with pytest.raises(ValueError, match="unknown subscription options"):
        parse_source(("events", "app@host", {"max": 5}))
    with pytest.raises(ValueError, match="min_demand"):
        parse_source(("events", "app@host", {"max_demand": 5, "min_demand": 5}))
    with pytest.raises(ValueError, match="names no producer"):
        GenStageProducer(node=None, subscribe_to=[])  # type: ignore[arg-type]


async def test_an_exposed_stage_is_restarted_with_its_name_and_emit_goes_on() -> None:
    async with nodes(free_port()) as (a, b):
        name = unique_name("results")
        exposed = await expose(a, name, buffer_size=10)
        first = exposed.stage
        assert a.whereis(name) == first.pid
        waiting = asyncio.ensure_future(exposed.emit(range(30)))  # 10 taken, then it waits
        await eventually_async(lambda: first.buffered == 10)
        first.exit(Atom("kill"))
        await eventually_async(lambda: exposed.stage is not first)
        assert a.whereis(name) == exposed.stage.pid  # the same name, a new incarnation
        consumer = b.spawn(Recorder())
        consumer.subscribe((name, a.name), max_demand=5)
        await asyncio.wait_for(waiting, WAIT)
        await consumer.wait_events(20)
        # what the crashed stage held is lost with it, as in GenStage; the rest went on
        assert consumer.events == list(range(10, 30))
        await exposed.stop()
        assert a.whereis(name) is None
        with pytest.raises(StageStopped):
            await exposed.emit([1])
