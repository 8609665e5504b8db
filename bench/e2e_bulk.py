"""The bulk rows of bench/e2e.py (alone: ``python bench/e2e.py --bulk --rounds 7``): 64 KiB
and 1 MiB binaries, ``--bulk-bytes`` per run, each beside the same between two BEAM nodes.

- one Elixir client pushing to the Python pipeline, beside it pushing to a counter on another
  BEAM node;
- a Python ``Client`` pushing to a counting receiver on the Elixir node (paced by the
  connection's ``write_buffer_size``: a Python sender is never suspended as a BEAM one is),
  beside the other BEAM node doing the same;
- a Python ``ProducerStage`` emitting to a GenStage consumer (testkit/pb_gen_stage.erl) on the
  Elixir node, beside the GenStage stand-in producing on the Elixir node for a consumer on the
  other BEAM node.

Python and BEAM alternate, ``rounds`` times; a row shows the median rates and the median of the
rounds' ratios (on a machine of two cores, the BEAM pair's own rate moves by a third from one
run to the next: one run of each says little).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable

from support import say

from pybroadway.erldist import Node
from pybroadway.erldist.stages import ProducerStage
from pybroadway.otp_distribution import Client
from pybroadway.term import Atom, decode
from testkit.peers import BeamPeer

SIZES = (64 * 1024, 1024 * 1024)
PACE = 8 * 1024 * 1024
"""A Python Client pushing bulk stops while more than this waits to be written; a stage's
consumer asks for this many bytes of events at a time."""

Run = Callable[[], Awaitable[tuple[float, int]]]
"""One timed run: (messages/s, how many were lost)."""

_names = itertools.count()  # a name per run: the last run's stage may still be stopping


async def push_rows(push: Callable[[int, int], Run], client: BeamPeer, other: BeamPeer,
                    bulk_bytes: int, rounds: int) -> list[tuple[str, ...]]:
    """The Elixir client pushing into the pipeline: ``push(count, size)`` makes a run of it."""
    rows: list[tuple[str, ...]] = []
    for size in SIZES:
        count = max(16, bulk_bytes // size)
        rows += await _row(f"push {size // 1024} KiB, 1 Elixir client", size, rounds,
                           push(count, size),
                           lambda c=count, s=size: beam_rate(client, other, c, s))
    return rows


async def send_rows(node: Node, elixir: BeamPeer, other: BeamPeer, bulk_bytes: int,
                    rounds: int) -> list[tuple[str, ...]]:
    """Python sending to the Elixir node: a Client's pushes and a ProducerStage's events."""
    rows: list[tuple[str, ...]] = []
    for size in SIZES:
        count = max(16, bulk_bytes // size)
        demand = max(4, PACE // size)
        rows += await _row(
            f"Python Client push {size // 1024} KiB -> Elixir", size, rounds,
            lambda c=count, s=size: client_push(node, elixir, c, s),
            lambda c=count, s=size: beam_rate(other, elixir, c, s))
        rows += await _row(
            f"Python ProducerStage {size // 1024} KiB -> Elixir consumer", size, rounds,
            lambda c=count, s=size, d=demand: stage_emit(node, elixir, c, s, d),
            lambda c=count, s=size, d=demand: beam_stages(elixir, other, c, s, d))
    return rows


async def _row(label: str, size: int, rounds: int, python: Run,
               beam: Callable[[], Awaitable[float]]) -> list[tuple[str, ...]]:
    rates: list[float] = []
    beams: list[float] = []
    lost = 0
    for turn in range(rounds):
        # Alternating which goes first: neither always runs on a machine the other warmed.
        if turn % 2:
            beams.append(await beam())
        rate, missing = await python()
        rates.append(rate)
        lost += missing
        if not turn % 2:
            beams.append(await beam())
        say(f"{label}: {rate:,.0f} msg/s ({rate * size / 1e6:,.0f} MB/s), lost {missing}; "
            f"BEAM -> BEAM {beams[-1]:,.0f} msg/s ({rate / beams[-1]:.2f}x)")
    rate, beam_rate_ = statistics.median(rates), statistics.median(beams)
    ratio = statistics.median(r / b for r, b in zip(rates, beams, strict=True))
    runs = f", median of {rounds}" if rounds > 1 else ""
    return [(f"BEAM -> BEAM raw, {label.split(' ', 1)[1]}", f"{beam_rate_:,.0f} msg/s",
             f"{beam_rate_ * size / 1e6:,.0f} MB/s{runs}", ""),
            (label, f"{rate:,.0f} msg/s", f"{rate * size / 1e6:,.0f} MB/s, lost {lost}{runs}",
             f"{ratio:.2f}x BEAM raw")]


async def beam_rate(sender: BeamPeer, receiver: BeamPeer, count: int, size: int) -> float:
    """Messages/s from ``sender`` to a counter on ``receiver`` (both BEAM nodes; either may be
    the Elixir one, whose evaluating process is registered as ``bench``)."""
    blast = f":pybroadway_e2e_bench.blast({{:bulk_sink, :'{receiver.node}'}}, {count}, {size})"
    if sender.node.startswith("e2eother"):  # an Erlang shell's words
        await sender.aeval("catch register(bench, self()), ok")
        blast = blast.replace(":pybroadway_e2e_bench.", "pybroadway_e2e_bench:")
        blast = blast.replace("{:bulk_sink, :", "{bulk_sink, ")
    await receiver.aeval(f":erlang.register(:bulk_sink, :erlang.spawn(:pybroadway_e2e_bench, "
                         f":counter, [{count}, {{:bench, :'{sender.node}'}}]))"
                         if receiver.node.startswith("e2eclient") else
                         f"register(bulk_sink, spawn(pybroadway_e2e_bench, counter, "
                         f"[{count}, {{bench, '{sender.node}'}}])), ok")
    return count / (decode(await sender.aeval(blast)) / 1e6)


async def client_push(node: Node, elixir: BeamPeer, count: int, size: int
                      ) -> tuple[float, int]:
    """A Python Client pushes ``count`` binaries of ``size`` to a counter on ``elixir``."""
    await elixir.aeval(f":erlang.register(:bulk_sink, :erlang.spawn(:pybroadway_e2e_bench, "
                       f":counter, [{count}, {{:bench, node()}}]))")
    pusher = await Client.start(node, receiver=("bulk_sink", elixir.node))
    connection = node.connection(Atom(elixir.node))
    assert connection is not None
    payload = b"x" * size
    started = time.perf_counter()
    done = asyncio.ensure_future(elixir.aeval(
        "receive do {:done, n} -> n after 300_000 -> 0 end"))
    for _ in range(count):
        pusher.push_message(payload)
        while connection.write_buffer_size > PACE:
            await asyncio.sleep(0.0002)
    received = decode(await done)
    elapsed = time.perf_counter() - started
    pusher.exit()
    return received / elapsed, count - received


async def stage_emit(node: Node, elixir: BeamPeer, count: int, size: int, demand: int
                     ) -> tuple[float, int]:
    """A Python ProducerStage emits ``count`` binaries to a GenStage consumer on ``elixir``."""
    name = f"py_bulk_{next(_names)}"
    stage = node.spawn(ProducerStage(), name=name)
    await elixir.aeval(f"""c = :pb_gen_stage.consumer({{:{name}, :'{node.name.name}'}},
        %{{max_demand: {demand}, keep: false, expect: {count}, report: self()}})""")
    payload = b"x" * size
    started = time.perf_counter()
    done = asyncio.ensure_future(elixir.aeval(
        "receive do {:pb_done, ^c, n, _} -> n after 300_000 -> 0 end"))
    for _ in range(count // demand):
        await stage.emit([payload] * demand)
    received = decode(await done)
    elapsed = time.perf_counter() - started
    stage.exit()
    return received / elapsed, count - received


async def beam_stages(producer: BeamPeer, consumer: BeamPeer, count: int, size: int,
                      demand: int) -> float:
    """Events/s from a GenStage producer stand-in on ``producer`` (an Elixir node) to a
    consumer on ``consumer``."""
    name = f"beam_bulk_{next(_names)}"
    micros = decode(await producer.aeval(f"""
        :pb_gen_stage.producer(:{name}, %{{
            events: {{:binary, :binary.copy("x", {size})}}, limit: {count}}})
        c = :erpc.call(:'{consumer.node}', :pb_gen_stage, :consumer, [
            {{:{name}, node()}}, %{{max_demand: {demand}, keep: false, expect: {count},
                                  report: self()}}])
        receive do {{:pb_done, ^c, _, micros}} -> micros after 300_000 -> 0 end"""))
    return count / (micros / 1e6) if micros else 0.0
