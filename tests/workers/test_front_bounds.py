"""A peer that subscribes to the workers' stage over and over holds one subscription there,
as a worker does: a worker that is killed and restarted still gets back in."""

from __future__ import annotations

import os
import signal

from pybroadway.erldist import Node
from pybroadway.erldist.stages import protocol as gs
from testkit.doubles import Slow
from testkit.peers import unique_name
from testkit.wait import eventually_async
from tests.erldist.stages_kit import Probe
from tests.workers.kit import WAIT, front, front_of

STAGE = "pybroadway_workers.Slow"


async def test_a_peer_that_floods_the_stage_with_subscriptions_locks_no_worker_out() -> None:
    async with front(Slow) as (node, pipeline):
        workers = front_of(pipeline)
        stage = node.process(node.whereis(STAGE))  # type: ignore[arg-type]
        async with Node(f"{unique_name('flood')}@localhost", cookie=node.cookie,
                        epmd_port=node.epmd_port) as flooder:
            assert await flooder.connect(node.name)
            probe = flooder.spawn(Probe())
            for _ in range(1100):
                probe.send((STAGE, node.name), gs.subscribe(probe.pid, flooder.make_ref(), []))
            refused = [await probe.next() for _ in range(1099)]
            assert {message[2] for message in refused} == {
                (gs.CANCEL, gs.TOO_MANY_SUBSCRIPTIONS)}
            assert len(stage.subscribers) == 3  # type: ignore[union-attr]
            victim = next(iter(workers.workers.values()))
            os.kill(workers.ports.os_pids()[victim.node.name], signal.SIGKILL)
            await eventually_async(lambda: victim.node not in workers.workers, timeout=WAIT)
            # restarted, it subscribes again and is taken
            await eventually_async(lambda: victim.node in workers.workers, timeout=WAIT)
            assert len(workers.workers) == 3
