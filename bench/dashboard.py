"""What watching the dashboard costs: one Elixir client pushes 12 B payloads (1 sender) to the
Python pipeline, with no dashboard, then with the dashboard served and 3 viewers reading its
stream; the two alternate, ``--rounds`` times, and the medians are compared.

    python bench/dashboard.py [--messages 200000] [--rounds 5] [--browsers]

The viewers read ``/api/stream`` in another process (as browsers would, elsewhere), so the
numbers measure what the node does for them; ``--browsers`` opens the page in 3 headless
Chromiums instead, once for the whole run (they share the machine's cores with the node; while
the dashboard is down between rounds they retry, and reconnect when it is back). Beside each
rate, the node's own CPU time per message (this process's). Target: the rate with the
dashboard open at least 0.95x the rate without.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from e2e import CLIENT_ERL, Sink, run_pipeline, timed
from support import BEAM_FLAGS, compile_erlang, print_table, say

from pybroadway.dashboard import start_dashboard
from pybroadway.erldist import Node
from testkit.browser import chromium
from testkit.peers import BeamPeer, free_port

VIEWERS = 3
READER = r"""
import selectors, socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
selector = selectors.DefaultSelector()
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /api/stream HTTP/1.1\r\nHost: bench\r\n\r\n")
    selector.register(sock, selectors.EVENT_READ)
print("reading", flush=True)
while True:
    for key, _ in selector.select():
        if not key.fileobj.recv(65536):
            sys.exit(0)
"""


@contextlib.asynccontextmanager
async def readers(port: int) -> AsyncIterator[None]:
    """``VIEWERS`` readers of the stream on ``port``, in another process, until the end."""
    reader = subprocess.Popen([sys.executable, "-c", READER, str(port), str(VIEWERS)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None
        assert await asyncio.to_thread(reader.stdout.readline) == "reading\n"
        yield
    finally:
        reader.kill()
        reader.wait()


@contextlib.asynccontextmanager
async def browsers(port: int) -> AsyncIterator[None]:
    """``VIEWERS`` headless Chromiums on the page at ``port``, open for the whole run: while
    the dashboard is down they retry (every 3 s), and come back when it is up again."""
    with contextlib.ExitStack() as stack:

        def open_page() -> None:  # selenium blocks: in a thread, while the node serves
            driver = stack.enter_context(chromium(Path(tempfile.mkdtemp(prefix="pbdash-"))))
            driver.get(f"http://127.0.0.1:{port}/")

        try:
            for _ in range(VIEWERS):
                await asyncio.to_thread(open_page)
            yield
        finally:
            await asyncio.to_thread(stack.close)


async def bench(args: argparse.Namespace) -> list[tuple[str, ...]]:
    build = compile_erlang("pybroadway_e2e_bench", CLIENT_ERL)
    epmd_port = free_port()
    n = args.messages
    sink = Sink()
    client: BeamPeer
    rates: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": []}  # this process's µs a message

    async def measure(key: str) -> tuple[float, int]:
        started = time.process_time()
        rate, lost = await timed(sink, n, args.timeout, client, push)
        rates[key].append(rate)
        cpu[key].append((time.process_time() - started) / n * 1e6)
        return rate, lost

    async with Node("pydashbench@localhost", cookie="bench", epmd_port=epmd_port) as node:
        client = BeamPeer.elixir(epmd_port=epmd_port, cookie="bench", name="dashclient",
                                 extra_erl=" ".join(["-pa", build, *BEAM_FLAGS]))
        try:
            pipeline = await run_pipeline(node, "push", sink)
            await client.aeval(f"true = Node.connect(:'{node.name.name}')")
            await client.aeval("Process.register(self(), :bench)")
            await client.aeval("pid = :pybroadway_e2e_bench.receiver()")
            push = f":pybroadway_e2e_bench.push({n}, 12, 1, self())"
            await timed(sink, n, args.timeout, client, push)  # warm up
            port = free_port()
            async with contextlib.AsyncExitStack() as stack:
                if args.browsers:  # started once: their start-up is not what is measured
                    async with await start_dashboard(pipeline, node, port):
                        await stack.enter_async_context(browsers(port))
                for round_ in range(args.rounds):
                    rate, lost = await measure("without")
                    say(f"round {round_ + 1}: no dashboard {rate:,.0f} msg/s, lost {lost}")
                    dashboard = await start_dashboard(pipeline, node, port)
                    async with dashboard, contextlib.AsyncExitStack() as viewing:
                        if not args.browsers:
                            await viewing.enter_async_context(readers(port))
                        await wait_viewers(dashboard)
                        rate, lost = await measure("with")
                    say(f"round {round_ + 1}: {VIEWERS} viewers {rate:,.0f} msg/s, lost {lost}")
            await pipeline.stop()
        finally:
            client.kill()
    without, with_ = (statistics.median(rates[key]) for key in ("without", "with"))
    cpu_without, cpu_with = (statistics.median(cpu[key]) for key in ("without", "with"))
    # each round's pair, side by side in time: what the machine's other load does to both
    ratio = statistics.median(a / b for a, b in zip(rates["with"], rates["without"],
                                                   strict=True))
    kind = "headless Chromiums" if args.browsers else "stream readers"
    return [
        ("push 12 B, 1 sender, no dashboard", f"{without:,.0f} msg/s",
         f"node CPU {cpu_without:.2f} µs/msg", ""),
        (f"push 12 B, 1 sender, dashboard + {VIEWERS} {kind}", f"{with_:,.0f} msg/s",
         f"node CPU {cpu_with:.2f} µs/msg",
         f"{with_ / without:.2f}x; median of the rounds' ratios {ratio:.2f}x (target >= 0.95x)"),
    ]


async def wait_viewers(dashboard: Any) -> None:
    """Until every viewer is connected (a browser takes a moment to load the page)."""
    async with asyncio.timeout(60):
        while len(dashboard.viewers) < VIEWERS:
            await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--browsers", action="store_true",
                        help="3 headless Chromiums instead of 3 stream readers")
    args = parser.parse_args()
    rows = asyncio.run(bench(args))
    print_table(f"dashboard cost, medians of {args.rounds} alternating rounds "
                f"({args.messages:,} messages each)", rows)


if __name__ == "__main__":
    main()
