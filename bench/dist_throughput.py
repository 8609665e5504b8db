"""Receive throughput and call latency of a Python node, next to the same between two BEAMs.

An Erlang node A sends N ``{m, Payload}`` messages (12 B and 1 KiB binaries) to a registered
process that counts them and then tells A it is done: once on the Python node, once on a second
Erlang node B. A times each run from the first send to the ``done`` and the best of ``--rounds``
is kept. Then A makes ``--calls`` ``gen_server:call``s to a Python GenServer and to B's
net_kernel (a BEAM gen_server), timing each one.

The sender and counters are compiled Erlang (a small module built with ``erlc`` at start), so
the BEAM baseline is not slowed by the shell's interpreter. An embedded EPMD on a free port
serves everything; every node is stopped at the end. Run::

    python bench/dist_throughput.py [--messages 200000] [--calls 10000] [--otp 25]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from support import BEAM_FLAGS, compile_erlang, print_table, say

from pybroadway.erldist import GenServer, Node, Process
from pybroadway.term import Atom, decode
from testkit.peers import BeamPeer, free_port

BENCH_ERL = r"""
-module(pybroadway_dist_bench).
-export([blast/3, start_counter/1, latency/3]).

blast(Target, N, Size) ->
    Msg = {m, binary:copy(<<"x">>, Size)},
    T0 = erlang:monotonic_time(microsecond),
    send_loop(Target, Msg, N),
    receive {done, N} -> erlang:monotonic_time(microsecond) - T0
    after 300000 -> error(timeout)
    end.

send_loop(_, _, 0) -> ok;
send_loop(Target, Msg, K) -> Target ! Msg, send_loop(Target, Msg, K - 1).

start_counter(N) ->
    Waiter = receive {waiter, W} -> W end,
    count(N, N, Waiter).

count(N, 0, Waiter) -> Waiter ! {done, N};
count(N, K, Waiter) -> receive {m, _} -> count(N, K - 1, Waiter) end.

latency(Target, Request, Count) ->
    [gen_server:call(Target, Request) || _ <- lists:seq(1, 1000)],
    Times = [begin
                 T0 = erlang:monotonic_time(nanosecond),
                 _ = gen_server:call(Target, Request),
                 erlang:monotonic_time(nanosecond) - T0
             end || _ <- lists:seq(1, Count)],
    Sorted = list_to_tuple(lists:sort(Times)),
    {element(max(1, Count div 2), Sorted), element(max(1, Count * 99 div 100), Sorted),
     element(Count, Sorted)}.
"""


class Counter(Process):
    """Counts ``n`` messages, then sends ``{done, n}`` to the waiter."""

    def __init__(self, n: int, waiter: Any) -> None:
        super().__init__()
        self.n = n
        self.waiter = waiter

    async def run(self) -> None:
        receive = self.receive
        for _ in range(self.n):
            await receive()
        self.send(self.waiter, (Atom("done"), self.n))


class Pong(GenServer):
    def handle_call(self, request: Any, from_: Any) -> Any:
        return request


async def bench(args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    build = compile_erlang("pybroadway_dist_bench", BENCH_ERL)
    epmd_port = free_port()
    n = args.messages
    rows: list[tuple[str, str, str, str]] = []
    async with Node("pybench@localhost", cookie="bench", epmd_port=epmd_port) as node:
        node.spawn(Pong(), name="pong")
        say(f"python node up, embedded epmd on {epmd_port}; starting two OTP {args.otp} nodes")
        a = BeamPeer.erlang(args.otp, epmd_port=epmd_port, cookie="bench", name="bencha",
                            extra=["-pa", build, *BEAM_FLAGS])
        b = BeamPeer.erlang(args.otp, epmd_port=epmd_port, cookie="bench", name="benchb",
                            extra=["-pa", build, *BEAM_FLAGS])
        try:
            await a.aeval("register(bench_waiter, self())")
            await b.aeval("ok")
            await a.aeval(f"pong = net_adm:ping('{node.name.name}'), "
                          f"pong = net_adm:ping('{b.node}')")
            for size in (12, 1024):
                best: dict[str, float] = {}
                for target in ("beam", "python"):
                    times = []
                    for round_ in range(args.rounds):
                        if target == "python":
                            node.spawn(Counter(n, ("bench_waiter", a.node)), name="sink")
                            dest = f"{{sink, '{node.name.name}'}}"
                        else:
                            await b.aeval(f"register(sink, spawn(pybroadway_dist_bench, "
                                          f"start_counter, [{n}])), "
                                          f"sink ! {{waiter, {{bench_waiter, '{a.node}'}}}}")
                            dest = f"{{sink, '{b.node}'}}"
                        micros = decode(await a.aeval(
                            f"pybroadway_dist_bench:blast({dest}, {n}, {size})"))
                        times.append(micros / 1e6)
                        say(f"  {size:>5} B -> {target:<6} round {round_ + 1}: "
                            f"{n / times[-1]:>10,.0f} msg/s")
                    best[target] = n / min(times)
                rows.append((f"{size} B messages, BEAM -> BEAM", f"{best['beam']:,.0f} msg/s",
                             "", ""))
                rows.append((f"{size} B messages, BEAM -> Python",
                             f"{best['python']:,.0f} msg/s",
                             f"{best['python'] / best['beam']:.2f}x BEAM",
                             f"target >= {0.4 if size == 12 else 0.6}x"))
            for label, target, request in (
                    ("call latency BEAM -> Python GenServer", f"{{pong, '{node.name.name}'}}",
                     "ping"),
                    ("call latency BEAM -> BEAM gen_server", f"{{net_kernel, '{b.node}'}}",
                     "{is_auth, node()}")):
                say(f"  {label}: {args.calls} calls")
                p50, p99, worst = decode(await a.aeval(
                    f"pybroadway_dist_bench:latency({target}, {request}, {args.calls})"))
                rows.append((label, f"p50 {p50 / 1000:.0f} us", f"p99 {p99 / 1000:.0f} us",
                             f"max {worst / 1000:.0f} us"))
        finally:
            a.kill()
            b.kill()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--otp", default="25", help="25 (erl on PATH) or 28 "
                        "($PYBROADWAY_OTP28_ERL)")
    args = parser.parse_args()
    rows = asyncio.run(bench(args))
    print_table(f"N = {args.messages:,} messages per run (best of {args.rounds}), "
                f"{args.calls:,} calls, OTP {args.otp}, Python {sys.version.split()[0]}", rows)

if __name__ == "__main__":
    main()
