"""What one peer can make a GenStage stage hold or log is bounded: subscriptions per node (no
node takes them all from the others), refusals through the throttle, and subscriptions and
asks checked before use."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pybroadway.erldist import Node
from pybroadway.erldist.stages import ProducerStage
from pybroadway.erldist.stages import protocol as gs
from pybroadway.term import Atom
from testkit.peers import free_port, unique_name
from testkit.wait import eventually_async
from tests.erldist.stages_kit import Probe, Recorder, nodes


@pytest.fixture(autouse=True)
def no_erlang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")


def spawn_producer(node: Node, **options: Any) -> tuple[ProducerStage, tuple[str, Atom]]:
    name = unique_name("events")
    producer = node.spawn(ProducerStage(**options), name=name)
    return producer, (name, node.name)


async def test_one_node_cannot_take_every_subscription_from_the_others() -> None:
    """With the defaults (those of the workers' front too): one node that subscribes 1,100
    times holds 128 subscriptions, not all 1,024."""
    async with nodes(free_port(), 3) as (a, flooder, late):
        producer, address = spawn_producer(a)
        per_node = producer.max_subscriptions_per_node
        assert per_node < producer.max_subscriptions
        probe = flooder.spawn(Probe())
        tags = [flooder.make_ref() for _ in range(1100)]
        for tag in tags:
            probe.send(address, gs.subscribe(probe.pid, tag, []))
        refused = [await probe.next() for _ in range(1100 - per_node)]
        assert {message[2] for message in refused} == {(gs.CANCEL, gs.TOO_MANY_SUBSCRIPTIONS)}
        assert len(producer.subscribers) == per_node
        # another node (a worker coming back, say) still gets in, and gets events
        consumer = late.spawn(Recorder())
        consumer.subscribe(address, max_demand=10)
        await eventually_async(lambda: len(producer.subscribers) == per_node + 1)
        producer.emit_nowait(range(5))
        await consumer.wait_events(5)
        # what a node's consumers held is theirs again once they are gone
        probe.exit(Atom("kill"))
        await eventually_async(lambda: len(producer.subscribers) == 1)
        again = flooder.spawn(Probe())
        for tag in tags[:3]:
            again.send(address, gs.subscribe(again.pid, tag, []))
        await eventually_async(lambda: len(producer.subscribers) == 4)


@pytest.mark.parametrize("bound", ["max_subscriptions", "max_subscriptions_per_node"])
async def test_subscriptions_past_a_bound_are_refused(bound: str) -> None:
    async with nodes(free_port()) as (a, b):
        producer, address = spawn_producer(a, **{bound: 2})
        probe = b.spawn(Probe())
        tags = [b.make_ref() for _ in range(3)]
        for tag in tags:
            probe.send(address, gs.subscribe(probe.pid, tag, []))
        assert await probe.next() == gs.cancel_consumer(producer.pid, tags[2],
                                                        gs.TOO_MANY_SUBSCRIPTIONS)
        assert len(producer.subscribers) == 2


def test_the_bound_per_node_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="max_subscriptions_per_node"):
        ProducerStage(max_subscriptions_per_node=0)


async def test_refused_subscriptions_are_logged_through_the_throttle(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pybroadway.erldist.stages")
    async with nodes(free_port()) as (a, b):
        _, address = spawn_producer(a, max_subscriptions=1)
        probe = b.spawn(Probe())
        for _ in range(300):
            probe.send(address, gs.subscribe(probe.pid, b.make_ref(), []))
        for _ in range(299):
            await probe.next()
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert 1 <= len(lines) <= 5, lines[:10]


async def test_a_consumer_takes_events_and_cancels_only_from_its_producer() -> None:
    async with nodes(free_port(), 3) as (a, b, stranger_node):
        producer, address = spawn_producer(a)
        consumer = b.spawn(Recorder())
        subscription = consumer.subscribe(address, max_demand=10)
        stranger = stranger_node.spawn(Probe())
        # before the producer's first message: a process of another node is not it
        stranger.send(consumer.pid, gs.events(stranger.pid, subscription.tag, ["forged"]))
        stranger.send(consumer.pid, gs.cancel_consumer(stranger.pid, subscription.tag,
                                                       Atom("forged")))
        producer.emit_nowait([1])
        await consumer.wait_events(1)
        # after it: nor is another process of the producer's own node
        impostor = a.spawn(Probe())
        impostor.send(consumer.pid, gs.events(impostor.pid, subscription.tag, ["forged"]))
        impostor.send(consumer.pid, gs.cancel_consumer(impostor.pid, subscription.tag,
                                                       Atom("forged")))
        producer.emit_nowait([2])
        await consumer.wait_events(2)
        # nor is a process of another node that names the producer itself
        stranger.send(consumer.pid, gs.events(producer.pid, subscription.tag, ["forged"]))
        stranger.send(consumer.pid, gs.cancel_consumer(producer.pid, subscription.tag,
                                                       Atom("forged")))
        producer.emit_nowait([3])
        await consumer.wait_events(3)
        assert consumer.events == [1, 2, 3]
        assert consumer.ended == [] and subscription.pid == producer.pid
        assert subscription.tag in consumer.subscriptions


async def test_malformed_protocol_messages_are_ignored_with_a_throttled_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pybroadway.erldist.stages")
    async with nodes(free_port()) as (a, b):
        producer, address = spawn_producer(a)
        consumer = b.spawn(Recorder())
        consumer.subscribe(address, max_demand=10)
        probe = b.spawn(Probe())
        junk: list[Any] = [(gs.GEN_PRODUCER, probe.pid, (gs.ASK, 1)), (gs.GEN_PRODUCER,),
                           (gs.GEN_PRODUCER, (probe.pid,), (gs.ASK, 1), 4),
                           (gs.GEN_PRODUCER, (probe.pid, b.make_ref()), (gs.ASK,)),
                           (gs.GEN_PRODUCER, (probe.pid, [1]), (gs.SUBSCRIBE, gs.NIL, []))]
        for _ in range(100):
            for message in junk:
                probe.send(address, message)
                probe.send(consumer.pid, (gs.GEN_CONSUMER, *message[1:]))
        producer.emit_nowait(range(3))  # both go on serving
        await consumer.wait_events(3)
        lines = [r.getMessage() for r in caplog.records]
        assert any("malformed" in line for line in lines)
        assert len(lines) <= 2 * 6, lines[:14]
        assert producer.alive and consumer.alive and len(producer.subscribers) == 1


@pytest.mark.parametrize("drop_excess", [False, True])
async def test_events_beyond_demand_are_counted_logged_once_and_never_asked_again(
        drop_excess: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pybroadway.erldist.stages")
    async with nodes(free_port()) as (a, b):
        producer = a.spawn(Probe())
        consumer = b.spawn(Recorder(drop_excess=drop_excess))
        subscription = consumer.subscribe(producer.pid, max_demand=10, min_demand=5)
        tag = subscription.tag
        assert (await producer.next())[2][0] is gs.SUBSCRIBE
        assert await producer.next() == gs.ask(consumer.pid, tag, 10)
        # asked 10, given 10,000 twice (the consumer asks 10 again after each); then one
        # more event, within the demand
        for _ in range(2):
            producer.send(consumer.pid, gs.events(producer.pid, tag, list(range(10_000))))
        producer.send(consumer.pid, gs.events(producer.pid, tag, [b"last"]))
        await consumer.until(lambda: b"last" in consumer.events)
        b.send(producer.pid, b"asked so far")  # comes after the consumer's asks
        asked = 0
        while (message := await producer.next()) != b"asked so far":
            asked += message[2][1]
        # handled as GenStage does, or dropped: either way re-asked only what was demanded
        assert len(consumer.events) == (21 if drop_excess else 20_001)
        assert asked == 20
        assert subscription.exceeded == 2 * 9_990 and subscription.pending == 9
        lines = [r for r in caplog.records if "beyond the demand" in r.getMessage()]
        assert len(lines) == 1


async def test_requests_naming_a_process_of_another_node_are_ignored(
        caplog: pytest.LogCaptureFixture) -> None:
    """Who subscribes is the sending node's process: a node that names one of another node
    (a worker's, to take its one place at the workers' front) is ignored."""
    caplog.set_level(logging.WARNING, logger="pybroadway.erldist.stages")
    async with nodes(free_port(), 3) as (a, forger, victim):
        producer, address = spawn_producer(a, max_subscriptions_per_node=1)
        target = victim.spawn(Probe())  # a live process of the victim's node
        probe = forger.spawn(Probe())
        for _ in range(5):
            probe.send(address, gs.subscribe(target.pid, forger.make_ref(), []))
        probe.send(address, gs.subscribe(probe.pid, forger.make_ref(), []))  # after those
        await eventually_async(lambda: len(producer.subscribers) == 1)
        assert [key[0] for key in producer.subscribers] == [probe.pid]
        consumer = victim.spawn(Recorder())
        consumer.subscribe(address, max_demand=10)
        producer.emit_nowait(range(4))
        await consumer.wait_events(2)
        assert any("not from that process's node" in r.getMessage() for r in caplog.records)

