"""A worker killed with SIGKILL mid-stream: what it held fails with a reason naming it, or is
handed to the other worker (redeliver); either way every message is acknowledged exactly
once, and the worker is restarted and joins again. The same when the front's stage is
killed: it is restarted under its name, the workers subscribe to it again, and the stream
goes on."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from pybroadway.term import Atom
from testkit.wait import eventually_async
from tests.workers.kit import WAIT, Tally, front, front_of, push
from tests.workers.pipelines import Slow


@pytest.mark.parametrize("redeliver", [False, True])
async def test_a_killed_worker_fails_or_hands_over_what_it_held(redeliver: bool) -> None:
    count = 600
    tally = Tally(count)
    async with front(Slow, max_demand=20, redeliver=redeliver) as (_, pipeline):
        workers = front_of(pipeline)
        pushing = asyncio.create_task(
            push(pipeline, tally.messages([b"x"] * count, [{"ms": 3}] * count)))
        victim = await eventually_async(lambda: next(
            (w for w in workers.workers.values() if len(w.held) >= 5), None))
        os.kill(workers.ports.os_pids()[victim.node.name], signal.SIGKILL)
        await pushing
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
        # restarted within the intensity, and subscribed again
        await eventually_async(lambda: len(workers.workers) == 2, timeout=WAIT)
        stats = pipeline.stats()
    tally.check_once()
    if redeliver:
        assert not tally.failed
        assert workers.redelivered > 0
    else:
        assert tally.failed, "the killed worker held messages: they must fail"
        for status in tally.failed.values():
            assert status[0] == "failed"
            assert f"worker {victim.node.name} went away" in status[1]
        assert workers.lost == len(tally.failed)
    assert stats["handled"] + stats["failed"] == count


@pytest.mark.parametrize("redeliver", [False, True])
async def test_a_killed_stage_is_restarted_and_the_stream_goes_on(redeliver: bool) -> None:
    count = 600
    tally = Tally(count)
    async with front(Slow, max_demand=20, redeliver=redeliver) as (node, pipeline):
        workers = front_of(pipeline)
        pushing = asyncio.create_task(
            push(pipeline, tally.messages([b"x"] * count, [{"ms": 2}] * count)))
        await eventually_async(lambda: sum(len(w.held) for w in workers.workers.values()) >= 10)
        first = node.whereis("pybroadway_workers.Slow")
        assert first is not None
        node.exit(first, Atom("kill"))
        await pushing
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
        again = node.whereis("pybroadway_workers.Slow")
        assert again is not None and again != first
        await eventually_async(lambda: len(workers.workers) == 2, timeout=WAIT)
        stats = pipeline.stats()
    tally.check_once()
    assert stats["handled"] + stats["failed"] == count
    if redeliver:
        assert not tally.failed
    else:
        assert tally.failed, "the workers held messages when the stage died: they must fail"
        for status in tally.failed.values():
            assert "the workers' stage ended: :killed" in status[1]
