"""Run by test_bulk: an erl node pushes 1 GiB in 1 MiB binaries to a process of a Python
node in this process; prints how much the peak RSS grew meanwhile, in MiB (after a warm-up,
so that only what the traffic holds counts)."""

from __future__ import annotations

import asyncio
import resource

from pybroadway.erldist import Process
from testkit.peers import BeamPeer, SystemEpmd
from tests.erldist.nodekit import atom, python_node, started

MIB = 1 << 20
WARM_UP = 32
COUNT = 1024


class Counter(Process):
    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.warm = asyncio.Event()

    async def run(self) -> None:
        for received in range(1, self.count + 1):
            message = await self.receive(timeout=60)
            assert len(message) == MIB
            if received == WARM_UP:
                self.warm.set()


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def push(peer: BeamPeer, node_atom: str, count: int) -> None:
    await peer.aeval(f"Bin = binary:copy(<<7>>, {MIB}), "
                     f"[{{counter, {node_atom}}} ! Bin || _ <- lists:seq(1, {count})], ok")


async def main() -> None:
    epmd = SystemEpmd()
    try:
        async with python_node(epmd.port) as node, \
                started(BeamPeer.erlang("25", epmd_port=epmd.port)) as peer:
            counter = node.spawn(Counter(WARM_UP + COUNT), name="counter")
            await push(peer, atom(node), WARM_UP)
            await counter.warm.wait()
            before = peak_mib()
            await push(peer, atom(node), COUNT)
            await counter.wait()
            print("grown_mib", peak_mib() - before)
    finally:
        epmd.stop()


if __name__ == "__main__":
    asyncio.run(main())
