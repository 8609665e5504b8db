"""Workers by handler cost → messages per second.

For each handler cost (a CPU-bound handler spinning ~1 ms of pure Python per message, and a
no-op one) the same messages go through the pipeline in process (``concurrency`` 2, no
workers), then with 1, 2 and 4 worker processes (``offload=(WorkerFront, {"count": N})``).
Messages are
pushed by Python into the front's producer (lossless push: backpressure, nothing dropped);
the clock runs from the first push to the last acknowledgement, once the workers joined.

``--elixir``: the no-op handler again, but pushed from an Elixir node as bench/e2e.py does (its
compiled Erlang sender module, 1 and 4 senders casting ``{:push_message, <<12 bytes>>}`` to the
receiver found through ``:global``), into the in-process pipeline and into
``offload=(WorkerFront, {"count": 2})``: msg/s (first send to the last acknowledgement on the
front), the ratio to in process (the issue's target: >= 0.6x, the cost of the extra hop) and how
many were lost.

The bench's process is the front, as ``pybroadway serve`` would be, and sets the collector up as
serve does (:func:`pybroadway.runtime.tune_gc`, for both the in-process and the workers' runs);
the workers are ``pybroadway worker`` processes, which do it themselves.

Run from the repository's root::

    python bench/workers.py [--messages N] [--noop-messages N] [--cost-ms 1.0]
    python bench/workers.py --elixir [--elixir-messages 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import Any

from e2e import CLIENT_ERL
from support import BEAM_FLAGS, compile_erlang, print_table, say

from pybroadway.erldist import Node
from pybroadway.pipeline import Message, Pipeline
from pybroadway.runtime import tune_gc
from pybroadway.term import IMPLEMENTATION
from pybroadway.workers import WorkerFront
from testkit.doubles import Front, Passthrough, Slow
from testkit.peers import BeamPeer, free_port


async def joined(pipeline: Pipeline, workers: int) -> None:
    """Wait until ``workers`` workers have joined the pipeline's front (the clock starts
    then: their start-up is not what is measured)."""
    if not workers:
        return
    offload: Any = pipeline.offloaded()
    while len(offload.workers) < workers:
        await asyncio.sleep(0.05)


class Count:
    def __init__(self, expected: int) -> None:
        self.left = expected
        self.failed = 0
        self.done = asyncio.Event()

    def ack(self, ref: Any, ok: list[Message], bad: list[Message]) -> None:
        self.left -= len(ok) + len(bad)
        self.failed += len(bad)
        if self.left <= 0:
            self.done.set()


async def run(workers: int, messages: int, ms: float) -> tuple[float, int]:
    """msg/s and failures of one run (``workers`` 0: in process)."""
    async with Node(f"bench_front{os.getpid()}@localhost", cookie="bench",
                    epmd_port=free_port()) as node:
        options: dict[str, Any] = {}
        if workers:
            options["offload"] = (WorkerFront, {"count": workers,
                                                "max_demand": 100 if ms else 1000})
        # Slow spins metadata["ms"] of CPU per message (0: a no-op handler)
        pipeline = Slow(producer={"module": (Front, {"node": node})},
                        processors={"default": {"concurrency": 2, "max_demand": 100}},
                        **options)
        await pipeline.start()
        await joined(pipeline, workers)
        count = Count(messages)
        batch = [Message(b"x", {"ms": ms}, (count, None, None)) for _ in range(messages)]
        producer = pipeline.producers[0]
        started = time.perf_counter()
        for start in range(0, messages, 1000):
            if not pipeline.push_messages(batch[start:start + 1000]):
                await producer.wait_for_room()
        await count.done.wait()
        elapsed = time.perf_counter() - started
        await pipeline.stop()
        return messages / elapsed, count.failed


async def push_run(node: Node, client: Any, workers: int, messages: int, senders: int,
                   timeout: float) -> tuple[float, int]:
    """msg/s and lost of ``messages`` 12 B pushes from ``senders`` Elixir processes into the
    pipeline (in process with ``workers`` 0), done = acknowledged on the front."""
    from pybroadway.otp_distribution import OtpDistributionProducer

    options: dict[str, Any] = {}
    if workers:
        options["offload"] = (WorkerFront, {"count": workers, "max_demand": 1000})
    pipeline = Passthrough(producer={"module": (OtpDistributionProducer,
                                                {"node": node, "mode": "push"})},
                           processors={"default": {"concurrency": 1, "max_demand": 100}},
                           **options)
    await pipeline.start()
    try:
        await joined(pipeline, workers)
        await client.aeval("pid = :pybroadway_e2e_bench.receiver()")  # in :global already
        started = time.perf_counter()
        sending = asyncio.ensure_future(client.aeval(
            f":pybroadway_e2e_bench.push({messages}, 12, {senders}, self())"))
        deadline = started + timeout
        done = 0
        while time.perf_counter() < deadline:
            stats = pipeline.stats()
            done = stats["handled"] + stats["failed"]
            if done >= messages:
                break
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - started
        await sending
        return done / elapsed, messages - done
    finally:
        await pipeline.stop()


async def elixir_push(messages: int, timeout: float) -> list[tuple[str, ...]]:
    build = compile_erlang("pybroadway_e2e_bench", CLIENT_ERL)
    epmd_port = free_port()
    rows: list[tuple[str, ...]] = []
    async with Node(f"bench_front{os.getpid()}@localhost", cookie="bench",
                    epmd_port=epmd_port) as node:
        client = BeamPeer.elixir(epmd_port=epmd_port, cookie="bench", name="wpush",
                                 extra_erl=" ".join(["-pa", build, *BEAM_FLAGS]))
        try:
            await client.aeval(f"true = Node.connect(:'{node.name.name}')")
            for senders in (1, 4):
                base = 0.0
                for workers in (0, 2):
                    rate, lost = await push_run(node, client, workers, messages, senders,
                                                timeout)
                    base = base or rate
                    label = (f"push 12 B, {senders} sender{'s' if senders > 1 else ''}, "
                             + ("in process" if not workers else f"workers {workers}"))
                    say(f"{label}: {rate:,.0f} msg/s, {rate / base:.2f}x, lost {lost}")
                    rows.append((label, f"{rate:,.0f} msg/s", f"{rate / base:.2f}x in process",
                                 f"lost {lost}"))
        finally:
            client.kill()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--noop-messages", type=int, default=200_000)
    parser.add_argument("--cost-ms", type=float, default=1.0)
    parser.add_argument("--elixir", action="store_true",
                        help="the no-op handler pushed from an Elixir node instead")
    parser.add_argument("--elixir-messages", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per Elixir run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    tune_gc()
    if args.elixir:
        rows = asyncio.run(elixir_push(args.elixir_messages, args.timeout))
        print_table(f"No-op handler, Elixir push: N = {args.elixir_messages:,} per run; "
                    f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
                    f"{IMPLEMENTATION} codec", rows)
        return
    rows = [("handler", "workers", "msg/s", "x in process", "failed")]
    for label, ms, messages in ((f"CPU ~{args.cost_ms:g} ms/message", args.cost_ms,
                                 args.messages), ("no-op", 0.0, args.noop_messages)):
        base = 0.0
        for workers in (0, 1, 2, 4):
            rate, failed = asyncio.run(run(workers, messages, ms))
            base = base or rate
            shown = "in process" if not workers else str(workers)
            say(f"{label}, {shown}: {rate:,.0f} msg/s")
            rows.append((label, shown, f"{rate:,.0f}", f"{rate / base:.2f}x", str(failed)))
    print_table(f"Workers by handler cost: {os.cpu_count()} cores, "
                f"Python {sys.version.split()[0]}, {IMPLEMENTATION} codec", rows)


if __name__ == "__main__":
    main()
