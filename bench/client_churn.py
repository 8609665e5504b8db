"""Clients joining a cluster while it meshes: is anything lost, is anyone cut off?

A client of the library connects to the front, finds the receiver through ``:global`` and
pushes at once, while global meshes it with the rest of the cluster (connect_all). For each
cluster and client kind, ``--runs`` times: a new cluster, one client pushing ``--messages``
integers, then leaving. Two clusters of the same shape:

- ``pybroadway``: ``pybroadway serve --workers 2`` (the front and two worker nodes);
- ``BEAM``: three Elixir nodes, a front whose receiver (a GenServer registered in ``:global``
  under the library's name) counts pushes, and two nodes connected to it.

Clients: a Python node with :class:`pybroadway.otp_distribution.Client`, and an Elixir node
running examples/client.ex. The table says how many messages were lost and in how many runs
global disconnected a node "to prevent overlapping partitions" while the client pushed (never
right) and as it left (global.erl does it too: a node can hear of the leaver from another node
before its own nodedown). Issue 20 asks for 50 runs of each client kind with nothing lost.

Run from the repository's root::

    python bench/client_churn.py [--runs 50] [--messages 10000] [--cluster pybroadway|BEAM]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

from support import print_table, say

from testkit.churn import (
    CLIENTS,
    CUT_OFF,
    BeamCluster,
    Joined,
    serve_with_workers,
)
from testkit.peers import SystemEpmd, free_port, unique_name
from testkit.recorded import recorded

COOKIE = "client_churn"
STALL = 5.0
"""Seconds without progress after which a run's missing messages count as lost."""


@dataclass
class Tally:
    runs: int = 0
    pushed: int = 0
    handled: int = 0
    cut_while_pushing: int = 0
    cut_as_leaving: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, pushed: int, handled: int, during: list[str], after: list[str]) -> None:
        self.runs += 1
        self.pushed += pushed
        self.handled += handled
        self.cut_while_pushing += bool(during)
        self.cut_as_leaving += bool(after)
        self.examples += during[:2]


async def settled(count: Callable[[], Awaitable[int]], target: int) -> int:
    """``await count()`` once it reaches ``target`` or stops moving for :data:`STALL`
    seconds."""
    last, since = -1, time.monotonic()
    while True:
        now = await count()
        if now >= target:
            return now
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > STALL:
            return now
        await asyncio.sleep(0.1)


def cuts(lines: Sequence[str]) -> list[str]:
    return [line for line in lines if CUT_OFF in line]


async def pybroadway_run(kind: str, messages: int, tally: Tally) -> None:
    epmd_port = free_port()
    front = f"{unique_name('front')}@localhost"
    with TemporaryDirectory() as tmp:
        log = Path(tmp) / "handled"
        serve = serve_with_workers(front, epmd_port, COOKIE, log)
        try:
            await asyncio.to_thread(serve.wait_logged, "PyBroadway: worker ", 2, 60)
            client = await CLIENTS[kind](front, epmd_port, COOKIE, range(messages))

            async def handled_so_far() -> int:
                return len(recorded(log))

            handled = await settled(handled_so_far, messages)
            during = cuts(serve.stderr)
            await client.leave()
            await asyncio.to_thread(serve.wait_logged, " down: ", 1, 20)
            await asyncio.sleep(0.5)  # the workers' lines come through serve a moment later
            tally.add(messages, handled, during, cuts(serve.stderr)[len(during):])
        finally:
            serve.kill()


async def beam_run(kind: str, messages: int, tally: Tally) -> None:
    epmd = SystemEpmd()
    epmd_port = epmd.port
    cluster = BeamCluster(epmd_port, COOKIE)
    try:
        await cluster.start()
        client: Joined = await CLIENTS[kind](cluster.front.node, epmd_port, COOKIE,
                                             range(messages))
        counted = await settled(cluster.count, messages)
        during = cuts(cluster.log())
        await client.leave()
        while client.node.encode() in await cluster.front.aeval("Node.list()"):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # what the other nodes say of it, a moment later
        tally.add(messages, counted, during, cuts(cluster.log())[len(during):])
    finally:
        cluster.stop()
        epmd.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="runs per cluster and client")
    parser.add_argument("--messages", type=int, default=10_000, help="pushed per run")
    parser.add_argument("--cluster", choices=["pybroadway", "BEAM"], action="append",
                        help="only this cluster (default: both)")
    args = parser.parse_args()
    clusters = {"pybroadway": pybroadway_run, "BEAM": beam_run}
    rows = [["cluster", "client", "runs", "pushed", "lost", "cut while pushing",
             "cut as the client left"]]
    examples = []
    for name in args.cluster or list(clusters):
        for kind in sorted(CLIENTS):
            tally = Tally()
            for i in range(args.runs):
                await clusters[name](kind, args.messages, tally)
                say(f"{name}, {kind} client: run {i + 1} of {args.runs}, "
                    f"{tally.pushed - tally.handled} lost so far, "
                    f"{tally.cut_while_pushing} cut while pushing")
            rows.append([name, kind, str(tally.runs), f"{tally.pushed:,}",
                         f"{tally.pushed - tally.handled:,}", str(tally.cut_while_pushing),
                         str(tally.cut_as_leaving)])
            examples += tally.examples
    print_table(f"{args.runs} runs of {args.messages:,} pushes each, "
                f"a new cluster for every run", rows)
    for line in examples[:10]:
        print(f"  while pushing: {line}")


if __name__ == "__main__":
    asyncio.run(main())
