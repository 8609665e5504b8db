"""End to end: Elixir clients feed a Python pipeline through the connector.

    python bench/e2e.py [--messages 200000] [--pull-messages 50000] [--metrics]
    python bench/e2e.py --tls [--rounds 5]   # plain TCP and TLS rows (bench/e2e_tls.py)
    python bench/e2e.py --bulk [--rounds 5]  # the bulk rows alone (bench/e2e_bulk.py)

- push: 1 and 4 sender processes on an Elixir node register with the receiver (found through
  ``:global``, as the library's client does) and cast ``{:push_message, Payload}`` as fast as
  they can, 12 B and 1 KiB payloads; the pipeline's ``handle_message`` does nothing. Reported:
  handled msg/s (first send to last message handled) and how many were lost.
- pull: one Elixir client answers every pull request with a 12 B payload, in the words of the
  library's first version (``:request_message``) and of its last (``:pull_message``).
- push of structured events (a map of 5 keys whose values change with every message), 4
  senders, beside the same events sent by 4 processes to a counter on another BEAM node.
- BEAM -> BEAM: the raw rate of the same messages between two BEAM nodes, for the ratio.
- bulk, 64 KiB and 1 MiB binaries, ``--bulk-bytes`` (1 GiB) per run, each beside the same
  between two BEAM nodes: one Elixir client pushing to the pipeline; a Python ``Client``
  pushing to a counting receiver on the Elixir node (paced by the connection's
  ``write_buffer_size``: a Python sender is never suspended as a BEAM one is); a Python
  ``ProducerStage`` emitting to a GenStage consumer (testkit/pb_gen_stage.erl) on the Elixir
  node. ``--bulk-bytes 0`` leaves them out. ``--rounds`` alternates each with the BEAM's
  that many times and shows the medians (1 by default, 5 with ``--bulk``).

The Python side runs as ``pybroadway serve`` does: its garbage collector tuned for streams
(:func:`pybroadway.runtime.tune_gc`). ``--python-gc`` keeps CPython's settings instead, as a
program that runs its own node without calling it.

``--metrics`` serves the pipeline's Prometheus metrics (``pybroadway.metrics``) and scrapes
them every second while it runs, to show what they cost.

The Elixir node loads a small compiled Erlang module (built with ``erlc``) for the senders, so
the numbers measure the distribution and pybroadway, not an interpreter. Everything runs on
loopback with an embedded EPMD on a free port and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import urllib.request
from typing import Any

from e2e_bulk import push_rows, send_rows
from support import BEAM_FLAGS, compile_erlang, print_table, say

from pybroadway.erldist import Node
from pybroadway.otp_distribution import OtpDistributionProducer
from pybroadway.pipeline import Message, Pipeline
from pybroadway.runtime import tune_gc
from pybroadway.term import IMPLEMENTATION, decode
from testkit.genstage import standin_dir
from testkit.peers import BeamPeer, free_port

CLIENT_ERL = r"""
-module(pybroadway_e2e_bench).
-export([receiver/0, push/4, push_events/3, pull_client/3, counter/2, blast/3,
         blast_events/3]).

receiver() ->
    ok = global:sync(),
    global:whereis_name(off_broadway_otp_distribution_receiver).

%% Senders processes each register and cast N div Senders pushes; returns when all are sent.
push(N, Size, Senders, Parent) ->
    R = receiver(),
    Payload = binary:copy(<<"x">>, Size),
    Each = N div Senders,
    Pids = [spawn_link(fun() ->
                ok = gen_server:call(R, register),
                send_loop(R, {'$gen_cast', {push_message, Payload}}, Each),
                Parent ! {sent, self()}
            end) || _ <- lists:seq(1, Senders)],
    [receive {sent, P} -> ok end || P <- Pids],
    ok.

%% Structured events, as Elixir's %{id: i, ts: ..., value: i * 0.5, tags: [...], ok: true}:
%% values vary per message, so no two frames are alike. Returns when all are sent.
push_events(N, Senders, Parent) ->
    R = receiver(),
    spawn_senders(fun() -> ok = gen_server:call(R, register) end, R, N, Senders, Parent).

spawn_senders(Init, Target, N, Senders, Parent) ->
    Each = N div Senders,
    Pids = [spawn_link(fun() ->
                Init(),
                event_loop(Target, Each),
                Parent ! {sent, self()}
            end) || _ <- lists:seq(1, Senders)],
    [receive {sent, P} -> ok end || P <- Pids],
    ok.

event_loop(_, 0) -> ok;
event_loop(R, I) ->
    R ! {'$gen_cast', {push_message, #{id => I, ts => erlang:system_time(microsecond),
                                       value => I * 0.5, tags => [<<"sensor">>, <<"eu-west">>],
                                       ok => true}}},
    event_loop(R, I - 1).

send_loop(_, _, 0) -> ok;
send_loop(R, Msg, K) -> R ! Msg, send_loop(R, Msg, K - 1).

%% Answers every pull request in its version's words: first (0.1.0) is asked with
%% request_message and answers respond_to_pull_request; last with pull_message / send_message.
pull_client(Size, Parent, Version) ->
    {Request, Word} = case Version of
                          first -> {request_message, respond_to_pull_request};
                          last -> {pull_message, send_message}
                      end,
    Pid = spawn(fun() ->
        R = receiver(),
        ok = gen_server:call(R, register),
        Answer = {'$gen_cast', {Word, binary:copy(<<"x">>, Size)}},
        Parent ! registered,
        answer_loop(R, {'$gen_cast', Request}, Answer)
    end),
    receive registered -> Pid end.

answer_loop(R, Request, Answer) ->
    receive
        Request -> R ! Answer, answer_loop(R, Request, Answer);
        stop -> ok;
        _ -> answer_loop(R, Request, Answer)
    end.

counter(N, Waiter) -> count(N, N, Waiter).
count(N, 0, Waiter) -> Waiter ! {done, N};
count(N, K, Waiter) ->
    receive
        {'$gen_cast', _} -> count(N, K - 1, Waiter);
        {'$gen_call', From, register} -> gen:reply(From, ok), count(N, K, Waiter)
    end.

%% The BEAM baseline: the same messages to a counter on another BEAM node.
blast(Target, N, Size) ->
    Msg = {'$gen_cast', {push_message, binary:copy(<<"x">>, Size)}},
    T0 = erlang:monotonic_time(microsecond),
    send_loop(Target, Msg, N),
    receive {done, N} -> erlang:monotonic_time(microsecond) - T0
    after 300000 -> error(timeout)
    end.

%% The BEAM baseline for structured events: Senders processes to a counter on another node.
blast_events(Target, N, Senders) ->
    T0 = erlang:monotonic_time(microsecond),
    spawn_senders(fun() -> ok end, Target, N, Senders, self()),
    receive {done, N} -> erlang:monotonic_time(microsecond) - T0
    after 300000 -> error(timeout)
    end.
"""

class Sink:
    """Counts handled messages; ``done`` is set when ``target`` have been handled."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()
        self.finished_at = 0.0

    def expect(self, target: int) -> None:
        self.count, self.target = 0, target
        self.done.clear()

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        self.count += 1
        if self.count == self.target:
            self.finished_at = time.perf_counter()
            self.done.set()
        return message


async def run_pipeline(node: Node, mode: str, sink: Sink,
                       request_atom: str = "request_message") -> Pipeline:
    pipeline = Pipeline(
        handle_message=sink.handle_message,
        producer={"module": (OtpDistributionProducer, {
            "node": node, "mode": mode, "request_atom": request_atom})},
        processors={"default": {"concurrency": 1, "max_demand": 100}},
    )
    await pipeline.start()
    return pipeline


class Scraper:
    """The pipeline's metrics served and scraped every second, as by a Prometheus."""

    @classmethod
    async def start(cls, pipeline: Pipeline, node: Node, enabled: bool) -> Scraper | None:
        if not enabled:
            return None
        from pybroadway.metrics import start_metrics_server  # needs prometheus_client

        scraper = cls()
        scraper.server = await start_metrics_server(pipeline, node, port=0)
        scraper.task = asyncio.get_running_loop().create_task(scraper._scrape())
        return scraper

    async def stop(self) -> None:
        self.task.cancel()
        await self.server.stop()

    async def _scrape(self) -> None:
        def scrape() -> None:
            with urllib.request.urlopen(self.server.url, timeout=10) as response:
                response.read()

        while True:
            await asyncio.to_thread(scrape)
            await asyncio.sleep(1.0)


def handled_rate(sink: Sink, started: float) -> float:
    """Messages per second from ``started`` until the target was reached (or until now)."""
    if sink.done.is_set():
        return sink.target / (sink.finished_at - started)
    return sink.count / (time.perf_counter() - started)


async def timed(sink: Sink, count: int, timeout: float, client: BeamPeer, start: str
                ) -> tuple[float, int]:
    """Expect ``count`` messages, evaluate ``start`` on the client, and wait (at most
    ``timeout`` seconds) until they are handled: (messages/s, how many did not come)."""
    sink.expect(count)
    started = time.perf_counter()
    await client.aeval(start)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(sink.done.wait(), timeout)
    return handled_rate(sink, started), count - sink.count


async def beam_rows(client: BeamPeer, other: BeamPeer, raw: dict[int, float], n: int
                    ) -> list[tuple[str, ...]]:
    """The BEAM -> BEAM rates of the small messages (into ``raw``, by size; 0: events)."""
    rows: list[tuple[str, ...]] = []
    for size in (12, 1024):
        await other.aeval(f"register(sink, spawn(pybroadway_e2e_bench, counter, "
                          f"[{n}, {{bench, '{client.node}'}}]))")
        micros = decode(await client.aeval(
            f":pybroadway_e2e_bench.blast({{:sink, :'{other.node}'}}, {n}, {size})"))
        raw[size] = n / (micros / 1e6)
        say(f"BEAM -> BEAM {size} B: {raw[size]:,.0f} msg/s")
        rows.append((f"BEAM -> BEAM raw, {size} B", f"{raw[size]:,.0f} msg/s", "", ""))
    await other.aeval(f"register(sink, spawn(pybroadway_e2e_bench, counter, "
                      f"[{n}, {{bench, '{client.node}'}}]))")
    micros = decode(await client.aeval(
        f":pybroadway_e2e_bench.blast_events({{:sink, :'{other.node}'}}, {n}, 4)"))
    raw[0] = n / (micros / 1e6)
    say(f"BEAM -> BEAM structured events, 4 senders: {raw[0]:,.0f} msg/s")
    rows.append(("BEAM -> BEAM raw, structured event, 4 senders",
                 f"{raw[0]:,.0f} msg/s", "", ""))
    return rows


async def small_push_rows(sink: Sink, client: BeamPeer, raw: dict[int, float],
                          args: argparse.Namespace) -> list[tuple[str, ...]]:
    """The Elixir client pushing small messages and structured events into the pipeline."""
    n = args.messages
    rows: list[tuple[str, ...]] = []
    for size in (12, 1024):
        for senders in (1, 4):
            rate, lost = await timed(
                sink, n, args.timeout, client,
                f":pybroadway_e2e_bench.push({n}, {size}, {senders}, self())")
            say(f"push {size} B, {senders} sender(s): {rate:,.0f} msg/s, lost {lost}")
            rows.append((f"push {size} B, {senders} sender{'s' if senders > 1 else ''}",
                         f"{rate:,.0f} msg/s", f"lost {lost}",
                         f"{rate / raw[size]:.2f}x BEAM raw"))
    rate, lost = await timed(sink, n, args.timeout, client,
                             f":pybroadway_e2e_bench.push_events({n}, 4, self())")
    say(f"push structured events, 4 senders: {rate:,.0f} msg/s, lost {lost}")
    rows.append(("push structured event (119 B), 4 senders", f"{rate:,.0f} msg/s",
                 f"lost {lost}", f"{rate / raw[0]:.2f}x BEAM raw"))
    return rows


async def bench(args: argparse.Namespace) -> list[tuple[str, ...]]:
    build = compile_erlang("pybroadway_e2e_bench", CLIENT_ERL)
    epmd_port = free_port()
    rows: list[tuple[str, ...]] = []
    raw: dict[int, float] = {}
    sink = Sink()
    async with Node("pye2e@localhost", cookie="bench", epmd_port=epmd_port) as node:
        client = BeamPeer.elixir(epmd_port=epmd_port, cookie="bench", name="e2eclient",
                                 extra_erl=" ".join(["-pa", build, "-pa", standin_dir(),
                                                     *BEAM_FLAGS]))
        other = BeamPeer.erlang("25", epmd_port=epmd_port, cookie="bench", name="e2eother",
                                extra=["-pa", build, "-pa", standin_dir(), *BEAM_FLAGS])
        try:
            await client.aeval("Process.register(self(), :bench)")
            await other.aeval("1")
            await client.aeval(f"true = Node.connect(:'{other.node}')")
            if not args.bulk:
                rows += await beam_rows(client, other, raw, args.messages)
            pipeline = await run_pipeline(node, "push", sink)
            scraper = await Scraper.start(pipeline, node, args.metrics)
            await client.aeval(f"true = Node.connect(:'{node.name.name}')")
            # Join :global before timing anything (the senders look the receiver up there).
            await client.aeval("pid = :pybroadway_e2e_bench.receiver()")
            if not args.bulk:
                rows += await small_push_rows(sink, client, raw, args)
            if args.bulk_bytes:
                rows += await push_rows(
                    lambda count, size: lambda: timed(
                        sink, count, args.timeout, client,
                        f":pybroadway_e2e_bench.push({count}, {size}, 1, self())"),
                    client, other, args.bulk_bytes, args.rounds)
            if scraper is not None:
                await scraper.stop()
            await pipeline.stop()
            if args.bulk_bytes:
                rows += await send_rows(node, client, other, args.bulk_bytes, args.rounds)
            if args.bulk:
                return rows

            m = args.pull_messages
            for version, request_atom in (("first", "request_message"),
                                          ("last", "pull_message")):
                pipeline = await run_pipeline(node, "pull", sink, request_atom)
                scraper = await Scraper.start(pipeline, node, args.metrics)
                rate, _lost = await timed(
                    sink, m, args.timeout, client,
                    f"pull = :pybroadway_e2e_bench.pull_client(12, self(), :{version})")
                await client.aeval("send(pull, :stop)")
                label = f"pull 12 B, 1 client ({version} version: {request_atom})"
                say(f"{label}: {rate:,.0f} msg/s")
                rows.append((label, f"{rate:,.0f} msg/s",
                             f"handled {min(sink.count, m):,} of {m:,}",
                             "target >= 50,000 msg/s"))
                if scraper is not None:
                    await scraper.stop()
                await pipeline.stop()
        finally:
            client.kill()
            other.kill()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="per push run")
    parser.add_argument("--pull-messages", type=int, default=50_000)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    parser.add_argument("--bulk-bytes", type=int, default=1 << 30,
                        help="bytes per bulk run (0: no bulk runs)")
    parser.add_argument("--metrics", action="store_true",
                        help="serve Prometheus metrics and scrape them every second")
    parser.add_argument("--tls", action="store_true",
                        help="only push and handshakes over plain TCP and over TLS, beside "
                             "the BEAM's (bench/e2e_tls.py)")
    parser.add_argument("--bulk", action="store_true",
                        help="only the bulk rows, beside the BEAM's (bench/e2e_bulk.py)")
    parser.add_argument("--rounds", type=int,
                        help="alternating runs of each --tls or bulk row, of which the "
                             "medians are shown (default: 5 with --tls or --bulk, else 1)")
    parser.add_argument("--python-gc", action="store_true",
                        help="keep CPython's garbage collector settings (serve tunes them)")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 5 if args.tls or args.bulk else 1
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.bulk and args.bulk_bytes < 1:
        parser.error("--bulk needs --bulk-bytes of at least 1 (it runs only the bulk rows)")
    if not args.python_gc:
        tune_gc()
    gc_note = "; CPython's GC settings" if args.python_gc else "; GC tuned as serve does"
    if args.tls:
        from e2e_tls import transport_rows

        print_table(f"N = {args.messages:,} pushed per run; Python {sys.version.split()[0]}, "
                    f"{IMPLEMENTATION} codec{gc_note}", asyncio.run(transport_rows(args)))
        return
    rows = asyncio.run(bench(args))
    runs = (f"{args.bulk_bytes:,} bytes per bulk run, {args.rounds} rounds" if args.bulk else
            f"N = {args.messages:,} pushed per run, {args.pull_messages:,} pulled")
    print_table(f"{runs}; Python {sys.version.split()[0]}, {IMPLEMENTATION} codec{gc_note}"
                + ("; metrics scraped every second" if args.metrics else ""), rows)

if __name__ == "__main__":
    main()
