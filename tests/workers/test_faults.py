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
from testkit.doubles import Slow
from testkit.wait import eventually_async
from tests.workers.kit import WAIT, Tally, front, front_of, push

COUNT = 600
STAGE = "pybroadway_workers.Slow"


@pytest.mark.parametrize("redeliver", [False, True])
@pytest.mark.parametrize("fault", ["worker", "stage"])
async def test_what_a_fault_mid_stream_held_fails_or_is_handed_over(fault: str,
                                                                    redeliver: bool) -> None:
    tally = Tally(COUNT)
    async with front(Slow, max_demand=20, redeliver=redeliver) as (node, pipeline):
        workers = front_of(pipeline)
        pushing = asyncio.create_task(
            push(pipeline, tally.messages([b"x"] * COUNT, [{"ms": 3}] * COUNT)))
        victim = await eventually_async(lambda: next(
            (w for w in workers.workers.values() if len(w.held) >= 5), None))
        stage = node.whereis(STAGE)
        if fault == "worker":
            os.kill(workers.ports.os_pids()[victim.node.name], signal.SIGKILL)
            why = f"worker {victim.node.name} went away"
        else:
            assert stage is not None
            node.exit(stage, Atom("kill"))
            why = "the workers' stage ended: :killed"
        await pushing
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
        # restarted within the intensity (the stage under its name), and subscribed again
        await eventually_async(lambda: len(workers.workers) == 2, timeout=WAIT)
        if fault == "stage":
            assert node.whereis(STAGE) not in (None, stage)
        stats = pipeline.stats()
    tally.check_once()
    if redeliver:
        assert not tally.failed
        assert workers.redelivered > 0
    else:
        assert tally.failed, f"the {fault} held messages when it died: they must fail"
        for status in tally.failed.values():
            assert status[0] == "failed"
            assert why in status[1]
        assert workers.lost == len(tally.failed)
    assert stats["handled"] + stats["failed"] == COUNT
