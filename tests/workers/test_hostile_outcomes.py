"""Outcomes (``pybroadway_outcomes``) count for the worker of the node whose connection they
come on, never for the node they name, and only for the ids that worker holds, each once.
Malformed ones (ids that cannot be hashed, wrong shapes, huge lists, unknown or repeated ids)
are ignored with a throttled warning: the front's stage keeps running, and what the real
workers hold stays theirs. Workers that came and went are not counted as workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pybroadway.erldist import Node
from pybroadway.erldist.stages import ConsumerStage
from pybroadway.erldist.stages.consumer import Subscription
from pybroadway.erldist.stages.dispatchers import Subscriber
from pybroadway.pipeline import Pipeline
from pybroadway.term import Atom, Pid
from pybroadway.term.atoms import GEN_CALL
from pybroadway.workers import OUTCOMES, Worker
from pybroadway.workers._front import DEPARTED_LIMIT
from pybroadway.workers._options import OK, OPTIONS_REQUEST
from testkit.peers import unique_name
from testkit.wait import eventually_async
from tests.workers.kit import WAIT, Tally, front, front_of, push
from tests.workers.pipelines import Echo

COUNT = 60
STAGE = Atom("pybroadway_workers.Echo")
FAILED = Atom("failed")


class Holder(ConsumerStage):
    """A worker of the test's own: subscribes to the front's stage and holds the ids it is
    given (it reports nothing by itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[int] = []

    def handle_events(self, events: list[Any], subscription: Subscription) -> None:
        self.held += [event[0] for event in events]


@contextlib.asynccontextmanager
async def stopped_worker(pipeline: Pipeline) -> AsyncIterator[Worker]:
    """The front's one worker process, stopped (SIGSTOP) once it has asked for events, until
    the block ends: what it is given, it holds."""
    workers = front_of(pipeline)
    worker: Worker = await eventually_async(
        lambda: next(iter(workers.workers.values()), None), timeout=WAIT)
    await eventually_async(lambda: demand_of(pipeline, worker.pid) > 0, timeout=WAIT)
    os_pid = workers.ports.os_pids()[worker.node.name]
    os.kill(os_pid, signal.SIGSTOP)
    try:
        yield worker
    finally:
        os.kill(os_pid, signal.SIGCONT)


def demand_of(pipeline: Pipeline, pid: Pid) -> int:
    """What the consumer ``pid`` asked of the stage and was not yet given."""
    stage = front_of(pipeline).stage
    return sum(subscriber.demand for subscriber in stage.subscribers.values()
               if subscriber.pid == pid)


@contextlib.asynccontextmanager
async def peer_of(node: Node) -> AsyncIterator[Node]:
    """Another node of the front's cluster, connected to it."""
    async with Node(f"{unique_name('peer')}@localhost", cookie=node.cookie,
                    epmd_port=node.epmd_port) as peer:
        assert await peer.connect(node.name)
        yield peer


async def processed(peer: Node, node: Node) -> None:
    """Return once the stage has handled everything ``peer`` sent it so far: it answers a
    call sent after them (one connection, one mailbox, in order)."""
    reply = await peer.call((STAGE, node.name), (OPTIONS_REQUEST, Atom("Echo")), timeout=WAIT)
    assert reply[0] is OK


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "pybroadway.workers" and record.levelno == logging.WARNING
            and text in record.getMessage()]


async def test_malformed_outcomes_neither_stop_the_stage_nor_settle_anything(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway.workers")
    tally = Tally(COUNT)
    async with front(Echo, ready=False, count=1, max_demand=20) as (node, pipeline):
        workers = front_of(pipeline)
        stage = node.whereis(STAGE)
        async with stopped_worker(pipeline) as real, peer_of(node) as peer:
            holder = peer.spawn(Holder())
            subscription = holder.subscribe((STAGE, node.name), max_demand=10, manual=True)
            await eventually_async(lambda: peer.name in workers.workers, timeout=WAIT)
            holder.ask(subscription, 10)
            await eventually_async(lambda: demand_of(pipeline, holder.pid) == 10, timeout=WAIT)
            await push(pipeline, tally.messages([b"x"] * COUNT))
            await eventually_async(lambda: len(holder.held) == 10 and real.held
                                   and demand_of(pipeline, real.pid) == 0, timeout=WAIT)
            mine, theirs = holder.held, sorted(real.held)
            malformed: list[Any] = [
                (OUTCOMES, peer.name, [[1, 2]], []),  # an id that cannot be hashed
                (OUTCOMES, peer.name, [mine[0], {1: 2}], []),
                (OUTCOMES, peer.name, [-1, mine[0], [3]], []),
                (OUTCOMES, peer.name, [], [([mine[1]], FAILED, b"x")]),
                (OUTCOMES, peer.name, [], [(mine[1], FAILED)]),  # a failure of another shape
                (OUTCOMES, peer.name, b"no list", []),
                (OUTCOMES, peer.name, [mine[1]]),
                (OUTCOMES,),
                (OUTCOMES, peer.name, list(range(10**9, 10**9 + 100_000)), []),  # unknown ids
                # the other worker's messages, named as it (this node holds none of them)
                (OUTCOMES, real.node, theirs, [(key, FAILED, b"forged") for key in theirs]),
                # repeated: counts once, and the failure of an id just reported is ignored
                (OUTCOMES, peer.name, [mine[0]] * 3, [(mine[0], FAILED, b"again")]),
                b"no outcome at all",
                (GEN_CALL, ([mine[0]], 1), (OPTIONS_REQUEST, Atom("Echo"))),  # no caller
            ]
            for message in malformed * 3:  # a few in a row: nothing to restart
                peer.send(workers.stage.pid, message, sender=holder.pid)
            await processed(peer, node)
            assert node.whereis(STAGE) == stage and workers.stage.alive
            assert sorted(real.held) == theirs, "the real worker's messages were settled"
            hostile = workers.workers[peer.name]
            assert (hostile.handled, hostile.failed) == (1, 0)
            assert hostile.held == set(mine[1:])
            assert len(tally.acks) == 1 and not tally.failed
            logged = warnings(caplog, "ignored")
            assert logged and len(logged) < len(malformed) * 3, logged
            assert warnings(caplog, "unexpected message") and warnings(caplog, "a call from")
            await eventually_async(lambda: warnings(caplog, "were not logged"), timeout=WAIT)
            # What it does hold, it reports as a worker does: that counts.
            peer.send(workers.stage.pid, (OUTCOMES, peer.name, mine[1:], []),
                      sender=holder.pid)
            await processed(peer, node)
            assert (hostile.handled, hostile.failed, hostile.held) == (10, 0, set())
        # that node gone, one worker is left, and counted
        await eventually_async(lambda: len(pipeline.stats()["workers"]) == 1, timeout=WAIT)
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
        assert node.whereis(STAGE) == stage, "the stage was restarted"
    tally.check_once()
    assert not tally.failed


async def test_a_third_node_cannot_settle_a_workers_messages(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway.workers")
    tally = Tally(COUNT)
    async with front(Echo, ready=False, count=1, max_demand=20) as (node, pipeline):
        workers = front_of(pipeline)
        async with stopped_worker(pipeline) as real, peer_of(node) as third:
            await push(pipeline, tally.messages([b"x"] * COUNT))
            await eventually_async(lambda: real.held and demand_of(pipeline, real.pid) == 0,
                                   timeout=WAIT)
            theirs = sorted(real.held)
            own = third.spawn(Holder()).pid
            forged = Pid(real.node, own.id, own.serial, own.creation)  # a pid of the worker
            done = (OUTCOMES, real.node, theirs, [])
            failed = (OUTCOMES, real.node, [], [(key, FAILED, b"forged") for key in theirs])
            third.send((STAGE, node.name), done, sender=own)  # named, from its own process
            third.send(workers.stage.pid, failed, sender=forged)  # from the worker's "pid"
            third.send(workers.stage.pid, done)  # from no process
            await processed(third, node)
            assert sorted(real.held) == theirs, "a third node settled the worker's messages"
            assert not tally.acks
            assert warnings(caplog, "which is no worker")
            assert warnings(caplog, "unknown sender")
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
        stats = pipeline.stats()
    tally.check_once()
    assert not tally.failed
    assert [(worker["handled"], worker["failed"]) for worker in stats["workers"]] == [(COUNT, 0)]


async def test_workers_that_came_and_went_are_not_counted() -> None:
    import pybroadway.metrics as metrics_module
    async with front(Echo) as (node, pipeline):
        workers = front_of(pipeline)
        # 2,000 worker nodes subscribe and leave, as the stage tells the front of them
        for index in range(2000):
            subscriber = Subscriber(Pid(Atom(f"w{index}@elsewhere"), 1, 0, 1), index, {})
            workers.stage.on_subscribe(subscriber)
            workers.stage.on_cancel(subscriber, Atom("normal"))
        stats = pipeline.stats()  # what the status line counts
        metrics = metrics_module.Metrics(pipeline, node)
        try:
            text = metrics.exposition()[0].decode()
        finally:
            metrics.close()
    assert len(stats["workers"]) == 2
    assert 'pybroadway_workers{pipeline="Echo"} 2.0' in text
    assert len(workers.gone) == DEPARTED_LIMIT
    assert Atom("w1999@elsewhere") in workers.gone and Atom("w0@elsewhere") not in workers.gone


async def test_a_node_subscribes_once_and_what_it_held_is_settled_when_it_goes() -> None:
    tally = Tally(COUNT)
    async with front(Echo, ready=False, count=1, max_demand=20, redeliver=True
                     ) as (node, pipeline):
        workers = front_of(pipeline)
        async with peer_of(node) as peer:
            first, second = peer.spawn(Holder()), peer.spawn(Holder())
            subscription = first.subscribe((STAGE, node.name), max_demand=10, manual=True,
                                           cancel="temporary")
            await eventually_async(lambda: peer.name in workers.workers, timeout=WAIT)
            first.ask(subscription, 10)
            await eventually_async(lambda: demand_of(pipeline, first.pid) == 10, timeout=WAIT)
            await push(pipeline, tally.messages([b"x"] * COUNT))
            await eventually_async(lambda: len(first.held) == 10, timeout=WAIT)
            # a second subscription of that node is refused: the first keeps what it holds
            refused = second.subscribe((STAGE, node.name), max_demand=10, cancel="temporary")
            await eventually_async(lambda: refused.tag not in second.subscriptions,
                                   timeout=WAIT, what="the second subscription is cancelled")
            assert workers.workers[peer.name].subscriber.pid == first.pid
            assert workers.workers[peer.name].held == set(first.held)
        # that node gone, what it held is handed to the real worker
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
    tally.check_once()
    assert not tally.failed
    assert not second.held
