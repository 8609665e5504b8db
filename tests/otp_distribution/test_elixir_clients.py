"""Elixir clients (standard library only, the library client's calls) feeding a Python server."""

from __future__ import annotations

from collections import Counter

from pybroadway.term import Atom, decode
from testkit.peers import SystemEpmd
from testkit.wait import eventually_async
from tests.otp_distribution.helpers import elixir_peer, receiver_ref, server


async def test_push_handled_once_in_order_per_client(epmd: SystemEpmd) -> None:
    async with server(epmd.port) as (node, _pipeline, collector, _producer):
        peer = await elixir_peer(epmd.port, node)
        with peer:
            receiver = receiver_ref(node)
            await peer.aeval(f"for label <- [:a, :b], do: PbPusher.start({receiver}, label, "
                             "2000, self())")
            await collector.wait_for(4000, timeout=30)
            for label in ("a", "b"):
                got = [n for (lab, n) in collector.data if lab == Atom(label)]
                assert got == list(range(1, 2001))
            assert len(collector.data) == 4000


async def test_register_twice_counts_once_and_unknown_requests(epmd: SystemEpmd) -> None:
    async with server(epmd.port) as (node, _pipeline, _collector, producer):
        peer = await elixir_peer(epmd.port, node)
        with peer:
            receiver = receiver_ref(node)
            reply = decode(await peer.aeval(
                f"[GenServer.call({receiver}, :register), GenServer.call({receiver}, :register),"
                f" GenServer.call({receiver}, :nonsense), GenServer.cast({receiver}, :odd),"
                f" send({receiver}, :stray)]"))
            assert reply[:2] == [Atom("ok"), Atom("ok")]
            assert reply[2][0] == Atom("error")
            assert len(producer.receiver.clients) == 1
            assert decode(await peer.aeval(f"GenServer.call({receiver}, :unregister)")) \
                == Atom("ok")
            assert producer.receiver.clients == {}
            assert producer.receiver.alive


async def test_pull_one_client(epmd: SystemEpmd) -> None:
    async with server(epmd.port, mode="pull") as (node, _pipeline, collector, producer):
        peer = await elixir_peer(epmd.port, node)
        with peer:
            await peer.aeval(f"PbClient.start({receiver_ref(node)}, :one)")
            await collector.wait_for(500, timeout=30)
            got = [n for (_label, n) in collector.data[:500]]
            assert got == list(range(1, 501))
            # never more requests in flight than the unmet demand
            assert len(producer.receiver.clients) == 1


async def test_pull_three_clients_round_robin_and_one_killed(epmd: SystemEpmd) -> None:
    async with server(epmd.port, mode="pull") as (node, _pipeline, collector, producer):
        peer = await elixir_peer(epmd.port, node)
        with peer:
            await peer.aeval(
                f"pids = for l <- [:c1, :c2, :c3], do: elem(PbClient.start({receiver_ref(node)},"
                " l), 1)")
            await collector.wait_for(900, timeout=30)
            counts = Counter(label for (label, _n) in collector.data[:900])
            assert set(counts) == {Atom("c1"), Atom("c2"), Atom("c3")}
            assert max(counts.values()) - min(counts.values()) <= 30, counts
            await peer.aeval("Process.exit(hd(pids), :kill)")
            # the receiver drops the client when the DOWN arrives, which notifies no one
            await eventually_async(lambda: len(producer.receiver.clients) == 2)
            assert len(producer.receiver.clients) == 2
            mark = len(collector.data)
            await collector.wait_for(mark + 900, timeout=30)
            later = Counter(label for (label, _n) in collector.data[mark + 50:])
            assert Atom("c1") not in later
            assert later[Atom("c2")] and later[Atom("c3")]


async def test_burst_200k_from_4_processes_lossless(epmd: SystemEpmd) -> None:
    async with server(epmd.port, concurrency=2) as (node, pipeline, collector, producer):
        peer = await elixir_peer(epmd.port, node)
        with peer:
            receiver = receiver_ref(node)
            await peer.aeval(f"for l <- [:p1, :p2, :p3, :p4], do: PbPusher.start({receiver}, l,"
                             " 50_000, self())")
            await collector.wait_for(200_000, timeout=100)
            assert len(collector.data) == 200_000
            assert len(set(collector.data)) == 200_000
            assert producer.dropped == 0
            # the pushers all finished (senders were only slowed down, never failed)
            done = await peer.aeval(
                "for _ <- 1..4, do: (receive do {:pushed, l} -> l after 10_000 -> :timeout end)")
            assert Atom("timeout") not in decode(done)
        stats = pipeline.stats()
        assert stats["failed"] == 0


async def test_client_finds_receiver_through_global(epmd: SystemEpmd) -> None:
    async with server(epmd.port) as (node, _pipeline, collector, _producer):
        peer = await elixir_peer(epmd.port, node)
        with peer:
            await peer.aeval("{:ok, c} = PbClient.start(:global, :g)")
            await peer.aeval('GenServer.cast(c, {:push_message, "How are you?"})')
            await collector.wait_for(1, timeout=10)
            assert collector.data == [b"How are you?"]
