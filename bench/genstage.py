"""GenStage across the wire: rates of the GenStage paths beside the ones they are measured
against.

    python bench/genstage.py [--events 1000000] [--max-demand 1000]

- in-process: the pipeline (one processor, max_demand 100, no-op ``handle_message``) fed
  12 B binaries from a Python producer in the same process, the baseline;
- Elixir producer -> Python pipeline: the same pipeline fed by ``GenStageProducer``
  subscribed (max_demand 1,000) to a GenStage producer on an Elixir node;
- push, 1 Elixir client: the same pipeline fed by the off_broadway_otp_distribution
  receiver, one Elixir process casting ``{:push_message, Payload}`` (as bench/e2e.py does);
- Python producer -> Elixir consumer: ``ProducerStage.emit`` to a GenStage consumer on an
  Elixir node (max_demand 1,000);
- BEAM -> BEAM: the same producer and consumer stand-ins between two BEAM nodes.

The BEAM stages are the plain-Erlang stand-ins of testkit/pb_gen_stage.erl, written from
GenStage's message protocol (the real gen_stage speaks the same messages). Everything runs on
loopback with an embedded EPMD on a free port and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from e2e import CLIENT_ERL, Sink
from support import BEAM_FLAGS, compile_erlang, print_table, say

from pybroadway.erldist import Node
from pybroadway.erldist.stages import ProducerStage
from pybroadway.gen_stage import GenStageProducer
from pybroadway.otp_distribution import OtpDistributionProducer
from pybroadway.pipeline import Message, Pipeline, Producer
from pybroadway.term import IMPLEMENTATION, decode
from testkit.genstage import standin_dir
from testkit.peers import BeamPeer, free_port

PAYLOAD = b"x" * 12
PROCESSORS = {"default": {"concurrency": 1, "max_demand": 100}}


async def timed_pipeline(sink: Sink, count: int, timeout: float, **producer: Any
                         ) -> tuple[float, int]:
    """Run the pipeline until ``count`` messages are handled: (messages/s, lost)."""
    sink.expect(count)
    pipeline = Pipeline(handle_message=sink.handle_message, producer=producer,
                        processors=PROCESSORS)
    started = time.perf_counter()
    async with pipeline:
        try:
            await asyncio.wait_for(sink.done.wait(), timeout)
            rate = count / (sink.finished_at - started)
        except TimeoutError:
            rate = sink.count / (time.perf_counter() - started)
    return rate, count - min(sink.count, count)


async def in_process(sink: Sink, count: int, timeout: float) -> float:
    sink.expect(count)
    pipeline = Pipeline(handle_message=sink.handle_message,
                        producer={"module": (Producer, {"buffer_size": None})},
                        processors=PROCESSORS)
    async with pipeline:
        started = time.perf_counter()
        pipeline.push_messages([Message(PAYLOAD) for _ in range(count)])
        await asyncio.wait_for(sink.done.wait(), timeout)
        return count / (sink.finished_at - started)


async def bench(args: argparse.Namespace) -> list[tuple[str, ...]]:
    n, demand = args.events, args.max_demand
    push_build = compile_erlang("pybroadway_e2e_bench", CLIENT_ERL)
    epmd_port = free_port()
    rows: list[tuple[str, ...]] = []
    sink = Sink()
    async with Node("pygenstage@localhost", cookie="bench", epmd_port=epmd_port) as node:
        elixir = BeamPeer.elixir(epmd_port=epmd_port, cookie="bench", name="gsbench",
                                 extra_erl=" ".join(["-pa", standin_dir(), "-pa", push_build,
                                                     *BEAM_FLAGS]))
        other = BeamPeer.erlang("25", epmd_port=epmd_port, cookie="bench", name="gsother",
                                extra=["-pa", standin_dir(), *BEAM_FLAGS])
        try:
            await elixir.aeval("Process.register(self(), :bench)")
            await other.aeval("1")
            await elixir.aeval(f"true = Node.connect(:'{other.node}')")
            await elixir.aeval(f"true = Node.connect(:'{node.name.name}')")

            baseline = await in_process(sink, n, args.timeout)
            say(f"in-process pipeline: {baseline:,.0f} events/s")
            rows.append(("in-process -> pipeline (baseline)", f"{baseline:,.0f}/s", "", ""))

            # the push path of one Elixir client, for the ratio
            rate_push, lost_push = await push_rate(node, elixir, sink, n, args.timeout)
            say(f"push, 1 Elixir client: {rate_push:,.0f} msg/s, lost {lost_push}")

            await elixir.aeval(f":pb_gen_stage.producer(:events, %{{events: {{:binary, "
                               f"\"{PAYLOAD.decode()}\"}}, limit: {n}}})")
            rate, lost = await timed_pipeline(sink, n, args.timeout, module=(
                GenStageProducer, {"node": node, "subscribe_to": [
                    ("events", elixir.node, {"max_demand": demand})]}))
            say(f"Elixir producer -> pipeline: {rate:,.0f} events/s, lost {lost}")
            rows.append((f"Elixir producer -> pipeline, max_demand {demand:,}",
                         f"{rate:,.0f}/s", f"lost {lost}",
                         f"{rate / baseline:.2f}x in-process, {rate / rate_push:.1f}x push"))
            rows.append(("push, 1 Elixir client -> pipeline (bench/e2e.py's path)",
                         f"{rate_push:,.0f}/s", f"lost {lost_push}", ""))

            rate, lost = await python_to_elixir(node, elixir, n, demand)
            say(f"Python producer -> Elixir consumer: {rate:,.0f} events/s, lost {lost}")
            rows.append((f"Python ProducerStage -> Elixir consumer, max_demand {demand:,}",
                         f"{rate:,.0f}/s", f"lost {lost}", "target >= 1,000,000/s"))

            micros = decode(await elixir.aeval(f"""
                :pb_gen_stage.producer(:beam_events, %{{events: {{:binary, "{PAYLOAD.decode()}"}},
                                                       limit: {n}}})
                c = :erpc.call(:'{other.node}', :pb_gen_stage, :consumer, [
                    {{:beam_events, node()}}, %{{max_demand: {demand}, keep: false,
                                                 expect: {n}, report: self()}}])
                receive do {{:pb_done, ^c, _, micros}} -> micros after 300_000 -> 0 end"""))
            beam = n / (micros / 1e6) if micros else 0.0
            say(f"BEAM -> BEAM: {beam:,.0f} events/s")
            rows.append((f"BEAM producer -> BEAM consumer, max_demand {demand:,} (reference)",
                         f"{beam:,.0f}/s", "lost 0" if micros else "timed out", ""))
        finally:
            elixir.kill()
            other.kill()
    return rows


async def push_rate(node: Node, elixir: BeamPeer, sink: Sink, n: int, timeout: float
                    ) -> tuple[float, int]:
    sink.expect(n)
    pipeline = Pipeline(handle_message=sink.handle_message,
                        producer={"module": (OtpDistributionProducer, {"node": node})},
                        processors=PROCESSORS)
    async with pipeline:
        await elixir.aeval("pid = :pybroadway_e2e_bench.receiver()")
        started = time.perf_counter()
        await elixir.aeval(f":pybroadway_e2e_bench.push({n}, 12, 1, self())")
        try:
            await asyncio.wait_for(sink.done.wait(), timeout)
            return n / (sink.finished_at - started), 0
        except TimeoutError:
            return sink.count / (time.perf_counter() - started), n - sink.count


async def python_to_elixir(node: Node, elixir: BeamPeer, n: int, demand: int
                           ) -> tuple[float, int]:
    stage = node.spawn(ProducerStage(), name="py_events")
    await elixir.aeval(f"""c = :pb_gen_stage.consumer({{:py_events, :'{node.name.name}'}},
        %{{max_demand: {demand}, keep: false, expect: {n}, report: self()}})""")
    chunk = [PAYLOAD] * 1000
    started = time.perf_counter()
    done = asyncio.ensure_future(elixir.aeval(
        "receive do {:pb_done, ^c, n, _} -> n after 300_000 -> 0 end"))
    for _ in range(n // len(chunk)):
        await stage.emit(chunk)
    received = decode(await done)
    elapsed = time.perf_counter() - started
    stage.exit()
    return received / elapsed, n - received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--max-demand", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    args = parser.parse_args()
    rows = asyncio.run(bench(args))
    print_table(f"GenStage, {args.events:,} events of 12 B per run, codec {IMPLEMENTATION}",
                [("path", "rate", "lost", "ratio"), *rows])


if __name__ == "__main__":
    main()
