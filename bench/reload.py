"""Reloading a pipeline in place under load: how long does handling pause?

One Elixir client (a compiled Erlang sender on an Elixir node) registers with the receiver it
finds in ``:global`` and pushes small integers as fast as the connection takes them; the
Python pipeline (no-op handler, ``--concurrency`` processors) is reloaded ``--reloads`` times
(``Pipeline.reload`` with a new version of the handler) while it runs. Each handled message
notes its time and the version that handled it; the table shows, per reload, how long
``reload()`` took, the pause in handling it made (from the last message the old version
handled to the first the new one did), and the longest gap between two handled messages in
the second from its start, next to the longest gap in as long a window with no reload (what
the machine does anyway: collections, other processes). The end checks that every message was
handled once (count and sum) and that the client's monitor of the receiver never fired.

    .venv/bin/python bench/reload.py [--messages 2000000] [--reloads 5]

With ``--workers N`` the handler runs in N worker processes and a reload rolls them (one at a
time replaced by a new process); handling is then seen on the front, where the messages are
acknowledged: the table shows how long each roll took and the longest time in it, and in a
window with no reload, during which no message was acknowledged (polled every millisecond).

    .venv/bin/python bench/reload.py --workers 2 --messages 3000000 --reloads 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from support import BEAM_FLAGS, compile_erlang, print_table, say

from pybroadway.erldist import Node
from pybroadway.otp_distribution import OtpDistributionProducer
from pybroadway.pipeline import Message, Pipeline
from pybroadway.term import Atom, decode
from pybroadway.workers import WorkerFront
from testkit.doubles import Passthrough
from testkit.peers import BeamPeer, free_port

SENDER_ERL = r"""
-module(pybroadway_reload_bench).
-export([push/2]).

%% Registers with the receiver found in :global, monitors it, casts 1..N as fast as the
%% connection takes them; tells Parent {pushed, Down} (Down: none, or the monitor's reason).
push(N, Parent) ->
    spawn(fun() ->
        ok = global:sync(),
        R = global:whereis_name(off_broadway_otp_distribution_receiver),
        ok = gen_server:call(R, register),
        Ref = erlang:monitor(process, R),
        loop(R, 1, N),
        Down = receive {'DOWN', Ref, _, _, Why} -> Why after 0 -> none end,
        Parent ! {pushed, Down}
    end).

loop(_, I, N) when I > N -> ok;
loop(R, I, N) -> erlang:send(R, {'$gen_cast', {push_message, I}}), loop(R, I + 1, N).
"""

WINDOW = 1.0
"""Seconds after a reload in which its pause is looked for."""


class Gaps:
    """The longest gap between two handled messages since :meth:`watch`, when each version
    handled its first and last message, and the count and sum of what was handled."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.first_of: dict[str, float] = {}
        self.last_of: dict[str, float] = {}
        self.longest = 0.0
        self.count = 0
        self.total = 0
        self.done = asyncio.Event()
        self.goal = 0

    def watch(self) -> None:
        self.longest = 0.0

    def handler(self, version: str) -> Any:
        last_of = self.last_of

        def handle_message(processor: str, message: Message, context: Any) -> Message:
            now = time.monotonic()
            if version not in last_of:
                self.first_of[version] = now
            last_of[version] = now
            gap = now - self.last
            if gap > self.longest:
                self.longest = gap
            self.last = now
            self.count += 1
            self.total += message.data
            if self.count == self.goal:
                self.done.set()
            return message
        handle_message.__qualname__ = f"handle_message_{version}"
        return handle_message


@contextlib.asynccontextmanager
async def pushing(node: Node, messages: int) -> AsyncIterator[BeamPeer]:
    """The Elixir client, pushing ``messages`` to ``node``'s receiver at full speed."""
    build = compile_erlang("pybroadway_reload_bench", SENDER_ERL)
    with BeamPeer.elixir(epmd_port=node.epmd_port, cookie="bench", name="reloadclient",
                         extra_erl=" ".join(["-pa", build, *BEAM_FLAGS])) as client:
        await asyncio.to_thread(client.wait_started)
        await client.aeval("Process.register(self(), :bench)")
        await client.aeval(f"true = Node.connect(:'{node.name.name}')")
        await client.aeval(f":pybroadway_reload_bench.push({messages}, self())")
        yield client


async def client_said(client: BeamPeer) -> str:
    down = decode(await client.aeval(
        "receive do {:pushed, down} -> down after 30_000 -> :timeout end"))
    return "never fired" if down == Atom("none") else f"fired: {down}"


class Stalls:
    """Polls the pipeline's acknowledged count every millisecond: the longest time it did not
    move since :meth:`watch`."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.longest = 0.0
        self._task = asyncio.ensure_future(self._poll())

    def watch(self) -> None:
        self.longest = 0.0

    def done(self) -> int:
        stats = self.pipeline.stats()
        return int(stats["handled"] + stats["failed"])

    async def _poll(self) -> None:
        seen, since = self.done(), time.monotonic()
        while True:
            await asyncio.sleep(0.001)
            now, done = time.monotonic(), self.done()
            if done != seen:
                seen, since = done, now
            self.longest = max(self.longest, now - since)

    def stop(self) -> None:
        self._task.cancel()


async def bench_workers(args: argparse.Namespace) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("", "the roll took", "longest time nothing was acked")]
    async with Node("pyreload@localhost", cookie="bench", epmd_port=free_port()) as node:
        options = {"producer": {"module": (OtpDistributionProducer, {"node": node})},
                   "processors": {"default": {"concurrency": 2, "max_demand": 100}},
                   "offload": (WorkerFront, {"count": args.workers, "max_demand": 1000})}
        pipeline = Passthrough(version="v0", **options)
        async with pipeline:
            offload: Any = pipeline.offloaded()
            while len(offload.workers) < args.workers:
                await asyncio.sleep(0.05)
            async with pushing(node, args.messages) as client:
                stalls = Stalls(pipeline)
                await asyncio.sleep(WINDOW)
                stalls.watch()
                await asyncio.sleep(WINDOW)
                rows.append(("no reload (1 s)", "", f"{stalls.longest * 1000:.1f} ms"))
                for index in range(1, args.reloads + 1):
                    stalls.watch()
                    began = time.monotonic()
                    await pipeline.reload(Passthrough(version=f"v{index}", **options))
                    took = time.monotonic() - began
                    say(f"roll {index}: {took:.1f} s, longest stall "
                        f"{stalls.longest * 1000:.1f} ms")
                    rows.append((f"reload {index}", f"{took:.1f} s",
                                 f"{stalls.longest * 1000:.1f} ms"))
                    if stalls.done() >= args.messages:
                        say("the client finished before the reloads did: give more --messages")
                        break
                async with asyncio.timeout(args.timeout):
                    while stalls.done() < args.messages:
                        await asyncio.sleep(0.05)
                stalls.stop()
                said = await client_said(client)
            stats = pipeline.stats()
    rows.append(("handled, failed", "", f"{stats['handled']:,}, {stats['failed']:,} of "
                 f"{args.messages:,}"))
    rows.append(("client's monitor", "", said))
    return rows


async def bench(args: argparse.Namespace) -> list[tuple[str, ...]]:
    gaps = Gaps()
    gaps.goal = args.messages
    rows: list[tuple[str, ...]] = [("", "reload() took", "pause old -> new",
                                    "longest gap in 1 s")]
    async with Node("pyreload@localhost", cookie="bench", epmd_port=free_port()) as node:
        producer = {"module": (OtpDistributionProducer, {"node": node})}

        def make(version: str) -> Pipeline:
            return Pipeline(handle_message=gaps.handler(version), producer=producer,
                            processors={"default": {"concurrency": args.concurrency}},
                            version=version)

        pipeline = make("v0")
        async with pipeline:
            receiver = pipeline.producers[0].receiver  # type: ignore[attr-defined]
            pid = receiver.pid
            async with pushing(node, args.messages) as client:
                await asyncio.sleep(WINDOW)  # running at full speed
                gaps.watch()
                await asyncio.sleep(WINDOW)
                rows.append(("no reload", "", "", f"{gaps.longest * 1000:.1f} ms"))
                for index in range(1, args.reloads + 1):
                    if gaps.done.is_set():
                        say("the client finished before the reloads did: give more --messages")
                        break
                    gaps.watch()
                    began = time.monotonic()
                    await pipeline.reload(make(f"v{index}"))
                    took = time.monotonic() - began
                    await asyncio.sleep(WINDOW)
                    pause = gaps.first_of[f"v{index}"] - gaps.last_of[f"v{index - 1}"]
                    say(f"reload {index}: {took * 1000:.1f} ms, pause {pause * 1000:.1f} ms, "
                        f"longest gap {gaps.longest * 1000:.1f} ms")
                    rows.append((f"reload {index}", f"{took * 1000:.1f} ms",
                                 f"{pause * 1000:.1f} ms", f"{gaps.longest * 1000:.1f} ms"))
                async with asyncio.timeout(args.timeout):
                    await gaps.done.wait()
                said = await client_said(client)
                same = receiver.alive and receiver is pipeline.producers[0].receiver \
                    and receiver.pid == pid  # type: ignore[attr-defined]
        expected = args.messages * (args.messages + 1) // 2
        rows.append(("handled once each", "", f"{gaps.count:,} of {args.messages:,}",
                     f"sum {'ok' if gaps.total == expected else 'WRONG'}"))
        rows.append(("client's monitor", "", said, ""))
        rows.append(("receiver", "", "the same process" if same else "CHANGED", ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2_000_000)
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    if args.workers:
        rows = asyncio.run(bench_workers(args))
        print_table(f"Rolling reload of {args.workers} workers under a full-speed push of one "
                    f"Elixir client (no-op handler)", rows)
        return
    rows = asyncio.run(bench(args))
    print_table(f"Reload under a full-speed push of one Elixir client, {args.concurrency} "
                f"processors (no-op handler)", rows)


if __name__ == "__main__":
    main()
