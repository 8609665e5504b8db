"""Faults of a client's node mid-stream: killed (SIGKILL) or frozen (SIGSTOP) past the tick
time. The server notices within its tick window, its receiver forgets the client, what it read
is handled, and a frozen node that wakes up connects again and goes on."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pybroadway.term import Atom
from testkit.peers import SystemEpmd
from testkit.wait import eventually_async
from tests.otp_distribution.helpers import elixir_peer, receiver_ref, server

pytestmark = pytest.mark.timeout(120)

TICKTIME = 4.0  # the server's, short so that a frozen peer is noticed soon


async def test_a_client_node_killed_mid_stream(epmd: SystemEpmd) -> None:
    async with server(epmd.port) as (node, _pipeline, collector, producer):
        steady = await elixir_peer(epmd.port, node)
        doomed = await elixir_peer(epmd.port, node)
        with steady, doomed:
            ref = receiver_ref(node)
            await doomed.aeval(f"PbPusher.start({ref}, :doomed, 1_000_000, self())")
            await eventually_async(lambda: len(collector.data) > 1000)
            os.kill(doomed.proc.pid, signal.SIGKILL)
            await eventually_async(lambda: Atom(doomed.node) not in node.nodes())
            await eventually_async(lambda: all(pid.node is not Atom(doomed.node)
                                               for pid in producer.receiver.clients))
            got = [n for (label, n) in collector.data if label == Atom("doomed")]
            assert got == list(range(1, len(got) + 1))  # in order, none lost of what came
            # Another client is served as before.
            await steady.aeval(f"PbPusher.start({ref}, :steady, 100, self())")
            await eventually_async(lambda: [n for (label, n) in collector.data
                                            if label == Atom("steady")] == list(range(1, 101)))


async def test_a_client_node_frozen_past_the_tick_time(epmd: SystemEpmd) -> None:
    async with server(epmd.port, ticktime=TICKTIME) as (node, _pipeline, collector, producer):
        # A cluster's nodes share one tick time (the BEAM's net_ticktime).
        peer = await elixir_peer(epmd.port, node, extra_erl=f"-kernel net_ticktime {TICKTIME:g}")
        with peer:
            ref = receiver_ref(node)
            await peer.aeval(f"{{:ok, c}} = PbClient.start({ref}, :frozen); for i <- 1..100,"
                             " do: GenServer.cast(c, {:push_message, {:before, i}})")
            await eventually_async(lambda: len(collector.data) == 100)
            assert len(producer.receiver.clients) == 1
            frozen_at = time.monotonic()
            os.kill(peer.proc.pid, signal.SIGSTOP)
            try:
                # nodedown within the tick window (1 to 1.25 ticktimes of silence), and the
                # receiver's monitor of the client fires (DOWN, noconnection).
                await eventually_async(lambda: Atom(peer.node) not in node.nodes(),
                                       timeout=TICKTIME * 1.25 + 2)
                assert time.monotonic() - frozen_at <= TICKTIME * 1.25 + 1
                await eventually_async(lambda: not producer.receiver.clients, timeout=2)
            finally:
                os.kill(peer.proc.pid, signal.SIGCONT)
            # Awake again, it connects and goes on. (Until it has read that the old connection
            # is gone, it takes it for up and Node.connect says true at once: connected is
            # when this node has the new one.)
            async def reconnected() -> bool:
                await peer.aeval(f'Node.connect(:"{node.name.name}")')
                return Atom(peer.node) in node.nodes()

            await eventually_async(reconnected, timeout=10)
            await peer.aeval(f"PbPusher.start({ref}, :after, 100, self())")
            await eventually_async(lambda: [n for (label, n) in collector.data
                                            if label == Atom("after")] == list(range(1, 101)))
