"""GenStage between Python nodes, no Erlang anywhere: subscribe, ask, events, cancel both ways
with every cancel mode, DOWN of either side, nodedown, the three dispatchers, the bounded
buffer, and the answers to duplicate and unknown subscriptions."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from pybroadway.erldist import Node
from pybroadway.erldist.stages import (
    BroadcastDispatcher,
    PartitionDispatcher,
    ProducerStage,
    StageStopped,
    Subscriber,
)
from pybroadway.erldist.stages import protocol as gs
from pybroadway.erldist.supervisor import ChildSpec, Supervisor
from pybroadway.term import Atom
from pybroadway.term.atoms import NORMAL, SHUTDOWN
from testkit.peers import free_port, unique_name
from testkit.wait import eventually_async
from tests.erldist.stages_kit import WAIT, Probe, Recorder, nodes


@pytest.fixture(autouse=True)
def no_erlang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")


async def spawn_producer(node: Node, **options: Any) -> tuple[ProducerStage, tuple[str, Atom]]:
    name = unique_name("events")
    producer = node.spawn(ProducerStage(**options), name=name)
    return producer, (name, node.name)


async def test_events_flow_within_demand_across_nodes() -> None:
    async with nodes(free_port()) as (a, b):
        producer, address = await spawn_producer(a)
        consumer = b.spawn(Recorder())
        subscription = consumer.subscribe(address, max_demand=50, min_demand=10)
        emitted = list(range(1000))
        await asyncio.wait_for(producer.emit(emitted), WAIT)
        await consumer.wait_events(1000)
        assert consumer.events == emitted
        # never more than asked: per batch (pending never below zero) and in total
        assert subscription.exceeded == 0
        assert all(size <= 50 for _, size in consumer.batches)
        assert producer.dispatched == 1000 <= producer.asked
        assert subscription.pending <= 50
        # the last ask is on its way: once there, the producer owes what the consumer waits for
        await eventually_async(lambda: producer.asked - producer.dispatched == subscription.pending)


async def test_emit_waits_for_room_and_emit_nowait_keeps_the_last() -> None:
    async with nodes(free_port()) as (a, b):
        producer, address = await spawn_producer(a, buffer_size=100)
        emitting = asyncio.ensure_future(producer.emit(range(250)))
        await asyncio.sleep(0)
        assert not emitting.done() and producer.buffered == 100  # bounded, waiting
        consumer = b.spawn(Recorder())
        consumer.subscribe(address, max_demand=20)
        await asyncio.wait_for(emitting, WAIT)
        await consumer.wait_events(250)
        assert consumer.events == list(range(250))
        dropped = producer.emit_nowait(range(1000, 1300))  # consumer still asks 20 at a time
        assert dropped > 0 and producer.dropped == dropped
        assert producer.buffered <= 100
        await consumer.wait_events(250 + 300 - dropped)
        assert consumer.events[-1] == 1299  # :last kept


async def test_emit_to_a_stage_that_stopped_raises_instead_of_waiting_for_ever() -> None:
    async with nodes(free_port()) as (a, _b):
        producer, _address = await spawn_producer(a, buffer_size=10)
        waiting = asyncio.ensure_future(producer.emit(range(50)))  # no consumer: it waits
        await asyncio.sleep(0)
        assert not waiting.done()
        producer.exit(Atom("kill"))
        with pytest.raises(StageStopped, match="has stopped"):
            await asyncio.wait_for(waiting, WAIT)
        with pytest.raises(StageStopped):
            await producer.emit([1])


async def test_emit_nowait_to_a_stage_that_stopped_raises_and_gives_the_events_back() -> None:
    # Before, they were counted as emitted into the dead stage's buffer, and reached no one.
    async with nodes(free_port()) as (a, _b):
        producer, _address = await spawn_producer(a, buffer_size=10)
        producer.emit_nowait(range(3))
        producer.exit(Atom("kill"))
        await asyncio.wait_for(producer.wait(), WAIT)
        with pytest.raises(StageStopped, match="has stopped") as stopped:
            producer.emit_nowait(iter([7, 8]))
        assert stopped.value.unsent == [7, 8]
        assert producer.emitted == 3


@pytest.mark.parametrize(("mode", "reason", "exits"), [
    ("permanent", NORMAL, True), ("transient", NORMAL, False),
    ("transient", Atom("boom"), True), ("transient", (SHUTDOWN, 1), False),
    ("temporary", Atom("boom"), False)])
async def test_cancel_modes_when_the_producer_cancels(mode: str, reason: Any,
                                                      exits: bool) -> None:
    async with nodes(free_port()) as (a, b):
        producer, address = await spawn_producer(a)
        consumer = b.spawn(Recorder())
        consumer.subscribe(address, cancel=mode)  # type: ignore[arg-type]
        await producer.emit([1])
        await consumer.wait_events(1)
        producer.cancel(next(iter(producer.subscribers.values())), reason)
        if exits:
            assert await asyncio.wait_for(consumer.wait(), WAIT) == reason
        else:
            await consumer.wait_ended()
            assert consumer.alive and consumer.ended[0][1] == reason
        assert consumer.subscriptions == {} and producer.subscribers == {}


@pytest.mark.parametrize("mode", ["permanent", "temporary"])
async def test_consumer_cancel_is_confirmed_and_the_mode_applies(mode: str) -> None:
    async with nodes(free_port()) as (a, b):
        producer, address = await spawn_producer(a)
        consumer = b.spawn(Recorder())
        subscription = consumer.subscribe(address, cancel=mode)  # type: ignore[arg-type]
        await producer.emit(range(10))
        await consumer.wait_events(10)
        consumer.cancel(subscription, Atom("enough"))
        if mode == "permanent":
            assert await asyncio.wait_for(consumer.wait(), WAIT) == Atom("enough")
        else:
            await consumer.wait_ended()
            assert consumer.ended[0][1] == Atom("enough") and consumer.alive
        assert producer.subscribers == {}


async def test_producer_down_ends_the_subscription_with_its_reason() -> None:
    async with nodes(free_port()) as (a, b):
        producer, address = await spawn_producer(a)
        transient = b.spawn(Recorder())
        transient.subscribe(address, cancel="transient")
        permanent = b.spawn(Recorder())
        permanent.subscribe(address)
        await producer.emit(range(4))
        await transient.wait_events(1)
        producer.exit(Atom("crashed"))
        assert await asyncio.wait_for(transient.wait(), WAIT) == Atom("crashed")
        assert await asyncio.wait_for(permanent.wait(), WAIT) == Atom("crashed")


async def test_subscribing_to_nothing_ends_with_noproc() -> None:
    async with nodes(free_port()) as (a, b):
        consumer = b.spawn(Recorder())
        consumer.subscribe(("nobody", a.name), cancel="temporary")
        await consumer.wait_ended()
        assert consumer.ended[0][1] == Atom("noproc")


async def test_consumer_down_and_nodedown_free_the_subscriptions() -> None:
    async with nodes(free_port(), 3) as (a, b, c):
        producer, address = await spawn_producer(a)
        consumer = b.spawn(Recorder())
        consumer.subscribe(address)
        remote = c.spawn(Recorder())
        remote.subscribe(address)
        await eventually_async(lambda: producer.demand == 2000)
        await producer.emit([1])  # to the one with the most demand, then the other one
        await producer.emit([2])
        await consumer.wait_events(1)
        await remote.wait_events(1)
        assert len(producer.subscribers) == 2
        consumer.exit(Atom("kill"))
        c_name = c.name
        await c.stop()
        await eventually_async(lambda: not producer.subscribers)
        assert producer.demand == 0
        assert c_name not in a.nodes()


async def test_duplicate_and_unknown_subscriptions_are_answered_as_genstage_does() -> None:
    async with nodes(free_port()) as (a, b):
        producer, address = await spawn_producer(a)
        probe = b.spawn(Probe())
        tag = b.make_ref()
        probe.send(address, gs.subscribe(probe.pid, tag, []))
        probe.send(address, gs.subscribe(probe.pid, tag, []))
        assert await probe.next() == gs.cancel_consumer(producer.pid, tag,
                                                        gs.DUPLICATED_SUBSCRIPTION)
        stranger = b.make_ref()
        probe.send(address, gs.ask(probe.pid, stranger, 5))
        assert await probe.next() == gs.cancel_consumer(producer.pid, stranger,
                                                        gs.UNKNOWN_SUBSCRIPTION)
        probe.send(address, gs.ask(probe.pid, tag, 0))
        assert await probe.next() == gs.cancel_consumer(producer.pid, tag, (gs.BAD_DEMAND, 0))
        # and the consumer side: events on a subscription it does not know
        consumer = b.spawn(Recorder())
        fake = a.spawn(Probe())
        fake.send(consumer.pid, gs.events(fake.pid, stranger, [1, 2]))
        assert await fake.next() == gs.cancel_producer(consumer.pid, stranger,
                                                       gs.UNKNOWN_SUBSCRIPTION)
        assert consumer.events == []


class Counted(ProducerStage):
    """A producer stage that says when its second consumer has subscribed."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.two_subscribed = asyncio.Event()

    def on_subscribe(self, subscriber: Subscriber) -> None:
        if len(self.subscribers) == 2:
            self.two_subscribed.set()


async def test_broadcast_gives_every_event_to_every_consumer() -> None:
    async with nodes(free_port()) as (a, b):
        name = unique_name("events")
        producer = a.spawn(Counted(dispatcher=BroadcastDispatcher()), name=name)
        address = (name, a.name)
        fast, slow = b.spawn(Recorder()), b.spawn(Recorder())
        fast.subscribe(address, max_demand=100)
        slow.subscribe(address, max_demand=7, min_demand=3)
        # both subscribed before the first event, or the second would miss some
        await asyncio.wait_for(producer.two_subscribed.wait(), WAIT)
        await asyncio.wait_for(producer.emit(range(300)), WAIT)
        await fast.wait_events(300)
        await slow.wait_events(300)
        assert fast.events == slow.events == list(range(300))
        assert all(size <= 7 for _, size in slow.batches)


async def test_partitions_go_to_the_consumer_that_named_them() -> None:
    async with nodes(free_port()) as (a, b):
        dispatcher = PartitionDispatcher(["even", "odd"],
                                         hash=lambda n: "odd" if n % 2 else "even")
        producer, address = await spawn_producer(a, dispatcher=dispatcher)
        even, odd = b.spawn(Recorder()), b.spawn(Recorder())
        even.subscribe(address, partition="even", max_demand=10)
        odd.subscribe(address, partition=Atom("odd"), max_demand=10)  # as Elixir names it
        await asyncio.wait_for(producer.emit(range(100)), WAIT)
        await even.wait_events(50)
        await odd.wait_events(50)
        assert even.events == list(range(0, 100, 2))
        assert odd.events == list(range(1, 100, 2))
        refused = b.spawn(Recorder())
        refused.subscribe(address, partition="even", cancel="temporary")
        await refused.wait_ended()
        assert refused.ended[0][1][0] == gs.BAD_OPTS


async def test_handle_demand_produces_exactly_what_is_asked() -> None:
    class Counter(ProducerStage):
        def __init__(self) -> None:
            super().__init__()
            self.next = 0

        def handle_demand(self, demand: int) -> list[int]:
            start, self.next = self.next, self.next + demand
            return list(range(start, self.next))

    async with nodes(free_port()) as (a, b):
        name = unique_name("counter")
        producer = a.spawn(Counter(), name=name)
        consumer = b.spawn(Recorder())
        consumer.subscribe((name, a.name), max_demand=30)
        await consumer.wait_events(300)
        assert consumer.events[:300] == list(range(300))
        assert producer.emitted == producer.asked and producer.buffered == 0


async def test_events_are_handled_in_batches_of_max_minus_min_asking_as_genstage_does() -> None:
    async with nodes(free_port()) as (a, b):
        producer = a.spawn(Probe())
        consumer = b.spawn(Recorder())
        subscription = consumer.subscribe(producer.pid, max_demand=10, min_demand=6)
        message = await producer.next()
        assert message[0] is gs.GEN_PRODUCER and message[2][0] is gs.SUBSCRIBE
        assert await producer.next() == gs.ask(consumer.pid, subscription.tag, 10)
        producer.send(consumer.pid, gs.events(producer.pid, subscription.tag, list(range(10))))
        # GenStage's split_batches: 4, 4 and 2 events; after the first two, what is asked and
        # not handled is down to min (6): ask 4 each time; after the last it is 8
        assert await producer.next() == gs.ask(consumer.pid, subscription.tag, 4)
        assert await producer.next() == gs.ask(consumer.pid, subscription.tag, 4)
        await consumer.wait_events(10)
        assert [size for _, size in consumer.batches] == [4, 4, 2]
        assert consumer.events == list(range(10))
        assert subscription.pending == 8  # and no third ask (each adds to it before it goes)


class BrokenSource(ProducerStage):
    """A producer whose source is down: ``handle_demand`` raises."""

    def handle_demand(self, demand: int) -> list[int]:
        raise ConnectionError("the source is down")


class AsyncBrokenSource(ProducerStage):
    """The same with a coroutine ``handle_demand``, which raises after it has waited."""

    async def handle_demand(self, demand: int) -> list[int]:  # type: ignore[override]
        await asyncio.sleep(0)
        raise ConnectionError("the source is down")


@pytest.mark.parametrize("kind", [BrokenSource, AsyncBrokenSource])
async def test_handle_demand_that_raises_crashes_the_stage_as_genstage_does(
        kind: type[ProducerStage], caplog: pytest.LogCaptureFixture) -> None:
    """The stage exits with the error (logged as a crash); its permanent and transient
    consumers exit with that reason, a temporary one lives on; whoever emits is told it
    stopped; its supervisor starts it again under its name."""
    caplog.set_level(logging.ERROR)
    async with nodes(free_port()) as (a, b):
        name = unique_name("broken")
        supervisor = a.spawn(Supervisor([ChildSpec(
            id="source", start=lambda: kind(buffer_size=2), name=name)]))
        await asyncio.wait_for(supervisor.started.wait(), WAIT)
        producer = supervisor.child("source")
        assert isinstance(producer, ProducerStage)
        emitting = asyncio.ensure_future(producer.emit(range(5)))
        consumers = {mode: b.spawn(Recorder()) for mode in ("permanent", "transient", "temporary")}
        subscriptions = [consumer.subscribe((name, a.name), cancel=mode,  # type: ignore[arg-type]
                                            manual=True)
                         for mode, consumer in consumers.items()]
        await eventually_async(lambda: len(producer.subscribers) == 3)
        assert not emitting.done()  # the buffer holds 2 and nobody asked yet
        consumers["permanent"].ask(subscriptions[0], 1)
        reason = await asyncio.wait_for(producer.wait(), WAIT)
        assert reason == (Atom("exception"), "ConnectionError: the source is down")
        sent = (Atom("exception"), b"ConnectionError: the source is down")  # a binary on the wire
        assert await asyncio.wait_for(consumers["permanent"].wait(), WAIT) == sent
        assert await asyncio.wait_for(consumers["transient"].wait(), WAIT) == sent
        temporary = consumers["temporary"]
        await temporary.wait_ended()
        assert temporary.alive and temporary.ended[0][1] == sent
        with pytest.raises(StageStopped) as stopped:
            await asyncio.wait_for(emitting, WAIT)
        assert stopped.value.unsent  # what it could not take is given back
        with pytest.raises(StageStopped):
            await producer.emit([1])
        crashes = [r for r in caplog.records if "crashed" in r.getMessage()]
        assert len(crashes) == 1 and "the source is down" in crashes[0].getMessage()
        await asyncio.wait_for(supervisor.which_children(), WAIT)
        again = supervisor.child("source")
        assert again is not None and again is not producer and again.alive
        assert a.whereis(name) == again.pid
