"""What a buggy or hostile client sends never stops the receiver (or the node's system
processes) and leaves nothing behind that the client could grow without bound."""

from __future__ import annotations

import logging

import pytest

from pybroadway.otp_distribution import DEFAULT_NAME
from pybroadway.term import Atom, decode
from testkit.peers import SystemEpmd
from tests.otp_distribution.helpers import elixir_peer, receiver_ref, server

SERVED = ("global_name_server", "net_kernel", DEFAULT_NAME)


async def test_malformed_from_kills_no_system_process(epmd: SystemEpmd,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """``{'$gen_call', {1, 2}, x}`` gets no reply and one warning, as on the BEAM: the
    receiver, ``global_name_server`` and ``net_kernel`` keep their pids and go on serving."""
    caplog.set_level(logging.WARNING, "pybroadway.erldist.genserver")
    async with server(epmd.port) as (node, _pipeline, _collector, producer):
        before = {name: node.whereis(name) for name in SERVED}
        assert None not in before.values()
        peer = await elixir_peer(epmd.port, node)
        with peer:
            py = f':"{node.name.name}"'
            # A cast, so the sender does not wait for the reply that never comes; the
            # register call after it is answered only once the bad request was handled.
            for name in SERVED:
                await peer.aeval(f"send({{:{name}, {py}}}, {{:\"$gen_call\", {{1, 2}}, :x}})")
            answers = decode(await peer.aeval(
                f"[GenServer.call({receiver_ref(node)}, :register),"
                f" :global.sync(),"
                f" :global.whereis_name(:{DEFAULT_NAME}),"
                f" GenServer.call({{:net_kernel, {py}}}, {{:is_auth, node()}})]"))
        assert answers == [Atom("ok"), Atom("ok"), before[DEFAULT_NAME], Atom("yes")]
        assert {name: node.whereis(name) for name in SERVED} == before
        assert len(producer.receiver.clients) == 1
        warnings = [r for r in caplog.records if "malformed From" in r.getMessage()]
        assert len(warnings) == len(SERVED)


async def test_huge_integers_neither_kill_the_receiver_nor_lose_data(
        epmd: SystemEpmd, caplog: pytest.LogCaptureFixture) -> None:
    """Each of these is logged with the term in it: past CPython's 4,300-digit limit for
    int-to-str, inspect used to raise and the receiver died (or the message was lost)."""
    caplog.set_level(logging.DEBUG, "pybroadway")
    async with server(epmd.port) as (node, _pipeline, collector, _producer):
        receiver = node.whereis(DEFAULT_NAME)
        peer = await elixir_peer(epmd.port, node)
        with peer:
            ref = receiver_ref(node)
            big = "Integer.pow(10, 5000)"
            await peer.aeval(f"GenServer.cast({ref}, {{:odd, {big}}}); send({ref}, {{:stray,"
                             f" {big}}}); :ok = GenServer.call({ref}, :register);"
                             f" GenServer.cast({ref}, {{:push_message, {{:big, {big}}}}})")
            await collector.wait_for(1, timeout=10)
        assert collector.data == [(Atom("big"), 10**5000)]
        assert node.whereis(DEFAULT_NAME) == receiver


async def test_senders_that_never_registered_leave_no_state(epmd: SystemEpmd) -> None:
    """Thousands of short-lived processes casting once each: their data arrives, and the
    receiver keeps per-sender state only for registered clients."""
    async with server(epmd.port) as (node, _pipeline, collector, producer):
        peer = await elixir_peer(epmd.port, node)
        with peer:
            ref = receiver_ref(node)
            await peer.aeval(f"for i <- 1..2000, do: spawn(fn -> GenServer.cast({ref},"
                             " {:push_message, i}) end)")
            await collector.wait_for(2000, timeout=30)
            assert sorted(collector.data) == list(range(1, 2001))
            assert {m["node"] for m in collector.metadata} == {Atom(peer.node)}
            # Per-sender metadata is cached for registered clients only (it used to be kept
            # for every pid that ever sent, for good).
            assert len(producer.receiver._senders) == 0
