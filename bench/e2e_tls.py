"""The TLS rows of bench/e2e.py (``python bench/e2e.py --tls``): push over plain TCP and over
TLS distribution, each beside the same between two BEAM nodes, and handshake times.

For each transport (plain TCP, then TLS with certificates of one CA, OTP's mutual-TLS set-up):
one Elixir client pushes 12 B payloads with 1 sender to the Python pipeline, and blasts the
same messages to a counter on another BEAM node; the two alternate, ``--rounds`` times, and the
medians are reported. Then a fresh BEAM node dials the Python node and the other BEAM node in
turn (``net_kernel:hidden_connect_node``, so that ``global`` adds nothing), and the Python node
dials the BEAM node, ``--rounds`` times each: the median time until the connection is up.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from e2e import CLIENT_ERL, Sink, run_pipeline, timed
from support import BEAM_FLAGS, compile_erlang, say

from pybroadway.erldist import Node
from pybroadway.erldist.tls import TlsSettings
from pybroadway.term import Atom, decode
from testkit.certs import make_ca
from testkit.peers import BeamPeer, free_port
from testkit.tls import beam_args, optfile, tls_settings

HANDSHAKE_ROUNDS = 15


async def transport_rows(args: argparse.Namespace) -> list[tuple[str, ...]]:
    build = compile_erlang("pybroadway_e2e_bench", CLIENT_ERL)
    pki = Path(tempfile.mkdtemp(prefix="pybroadway-e2e-tls-"))
    ca = make_ca(pki / "ca")
    cert = ca.issue(pki / "node", "localhost")
    options = optfile(pki / "dist.conf", ca, cert)
    rows: list[tuple[str, ...]] = []
    for transport in ("tcp", "tls"):
        tls = tls_settings(ca, cert) if transport == "tls" else None
        extra = [*BEAM_FLAGS, *(beam_args("25", options) if tls else [])]
        rows += await _rows(args, transport, tls, build, extra)
    return rows


async def _rows(args: argparse.Namespace, transport: str, tls: TlsSettings | None,
                build: str, extra: list[str]) -> list[tuple[str, ...]]:
    epmd_port = free_port()
    n = args.messages
    sink = Sink()
    rows: list[tuple[str, ...]] = []
    async with Node(f"pye2e{transport}@localhost", cookie="bench", epmd_port=epmd_port,
                    tls=tls) as node:
        client = BeamPeer.elixir(epmd_port=epmd_port, cookie="bench",
                                 name=f"e2eclient{transport}",
                                 extra_erl=" ".join(["-pa", build, *extra]))
        other = BeamPeer.erlang("25", epmd_port=epmd_port, cookie="bench",
                                name=f"e2eother{transport}", extra=["-pa", build, *extra])
        dialer = BeamPeer.erlang("25", epmd_port=epmd_port, cookie="bench",
                                 name=f"e2edialer{transport}", extra=extra)
        try:
            await client.aeval("Process.register(self(), :bench)")
            await other.aeval("1")
            await dialer.aeval("1")
            await client.aeval(f"true = Node.connect(:'{other.node}')")
            pipeline = await run_pipeline(node, "push", sink)
            await client.aeval(f"true = Node.connect(:'{node.name.name}')")
            await client.aeval("pid = :pybroadway_e2e_bench.receiver()")
            python, beam, cpu_each = [], [], []
            for _ in range(args.rounds):
                await other.aeval(f"register(sink, spawn(pybroadway_e2e_bench, counter, "
                                  f"[{n}, {{bench, '{client.node}'}}]))")
                micros = decode(await client.aeval(
                    f":pybroadway_e2e_bench.blast({{:sink, :'{other.node}'}}, {n}, 12)"))
                beam.append(n / (micros / 1e6))
                cpu = time.process_time()
                rate, lost = await timed(sink, n, args.timeout, client,
                                         f":pybroadway_e2e_bench.push({n}, 12, 1, self())")
                cpu_each.append((time.process_time() - cpu) / n)
                python.append(rate)
                say(f"{transport}: BEAM -> BEAM {beam[-1]:,.0f} msg/s, push to Python "
                    f"{rate:,.0f} msg/s ({cpu_each[-1] * 1e6:.2f} us CPU a message), "
                    f"lost {lost}")
            await pipeline.stop()
            py_rate, beam_rate = statistics.median(python), statistics.median(beam)
            paired = [ours / theirs for ours, theirs in zip(python, beam, strict=True)]
            rows += [(f"{transport}: BEAM -> BEAM raw, 12 B", f"{beam_rate:,.0f} msg/s",
                      f"median of {args.rounds}", ""),
                     (f"{transport}: push 12 B, 1 Elixir sender", f"{py_rate:,.0f} msg/s",
                      f"median of {args.rounds}", f"{py_rate / beam_rate:.2f}x BEAM raw"),
                     (f"{transport}: push / BEAM raw, round by round",
                      f"{statistics.median(paired):.2f}x", "median",
                      f"{min(paired):.2f}-{max(paired):.2f}x"),
                     (f"{transport}: Python CPU a pushed message",
                      f"{statistics.median(cpu_each) * 1e6:.2f} us", "", "")]
            # Hidden connections only: no global, no other node, takes part.
            async with Node(f"pyhs{transport}@localhost", cookie="bench", hidden=True,
                            epmd_port=epmd_port, tls=tls) as lone:
                to_python = await _dial_times(dialer, lone.name.name)
                to_beam = await _dial_times(dialer, other.node)
                from_python = await _python_dial_times(lone, dialer)
            for label, times in (("BEAM -> Python", to_python), ("BEAM -> BEAM", to_beam),
                                 ("Python -> BEAM", from_python)):
                ms = statistics.median(times) * 1e3
                say(f"{transport}: handshake {label}: {ms:.1f} ms")
                rows.append((f"{transport}: handshake {label}", f"{ms:.1f} ms",
                             f"median of {len(times)}", ""))
        finally:
            client.kill()
            other.kill()
            dialer.kill()
    return rows


async def _dial_times(dialer: BeamPeer, target: str) -> list[float]:
    """Seconds ``dialer`` takes to connect to ``target``, connecting afresh each round."""
    micros = decode(await dialer.aeval(
        f"[begin timer:sleep(100), {{T, true}} = timer:tc(net_kernel, hidden_connect_node, "
        f"['{target}']), erlang:disconnect_node('{target}'), T end "
        f"|| _ <- lists:seq(1, {HANDSHAKE_ROUNDS})]"))
    return [t / 1e6 for t in micros]


async def _python_dial_times(node: Node, peer: BeamPeer) -> list[float]:
    times = []
    for _ in range(HANDSHAKE_ROUNDS):
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        assert await node.connect(peer.node, check=True)
        times.append(time.perf_counter() - started)
        node.disconnect(Atom(peer.node))
    return times
