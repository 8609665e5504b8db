"""Elixir clients (standard library only, the library client's calls) feeding a Python server
over TLS distribution (the Elixir node started with ``-proto_dist inet_tls -ssl_dist_optfile
F``, the Python node with the same certificates): pushes, and pulls in both versions of the
library's words, the client finding the receiver through ``:global``; nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybroadway.erldist.tls import TlsSettings
from pybroadway.term import Atom, decode
from testkit.peers import SystemEpmd
from testkit.tls import beam_args, optfile, tls_settings
from tests.conftest import Pki
from tests.erldist.nodekit import assert_over_tls
from tests.otp_distribution.helpers import elixir_peer, server

pytestmark = pytest.mark.timeout(90)

RECEIVER = "{:global, :off_broadway_otp_distribution_receiver}"


@pytest.fixture
def over_tls(pki: Pki, tmp_path: Path) -> tuple[TlsSettings, str]:
    """The Python server's TLS settings, and the Elixir node's ``--erl`` arguments for the
    same certificates (Elixir runs on OTP 25)."""
    options = optfile(tmp_path / "dist.conf", pki.ca, pki.node)
    return tls_settings(pki.ca, pki.node), " ".join(beam_args("25", options))


async def test_elixir_clients_push_over_tls_through_global(
        epmd: SystemEpmd, over_tls: tuple[TlsSettings, str]) -> None:
    settings, erl = over_tls
    async with server(epmd.port, tls=settings) as (node, pipeline, collector, producer):
        peer = await elixir_peer(epmd.port, node, extra_erl=erl)
        with peer:
            assert_over_tls(node, peer)
            # the library's client (:global.sync, whereis_name), and two pushers calling the
            # receiver by its :global name
            await peer.aeval("{:ok, c} = PbClient.start(:global, :client); "
                             "for i <- 1..2000, do: GenServer.cast(c, {:push_message, "
                             "{:client, i}})")
            await peer.aeval(f"for l <- [:p1, :p2], do: PbPusher.start({RECEIVER}, l, 5000, "
                             "self())")
            await collector.wait_for(12_000, timeout=60)
            for label, count in (("client", 2000), ("p1", 5000), ("p2", 5000)):
                assert [n for lab, n in collector.data if lab == Atom(label)] == \
                    list(range(1, count + 1))
            assert len(collector.data) == 12_000
            done = await peer.aeval(
                "for _ <- 1..2, do: (receive do {:pushed, l} -> l after 10_000 -> :timeout end)")
            assert Atom("timeout") not in decode(done)
            assert producer.dropped == 0
        assert pipeline.stats()["failed"] == 0


@pytest.mark.parametrize("request_atom", ["request_message", "pull_message"],
                         ids=["0.1.0", "last_version"])
async def test_an_elixir_client_is_pulled_over_tls_in_either_versions_words(
        request_atom: str, epmd: SystemEpmd, over_tls: tuple[TlsSettings, str]) -> None:
    """``request_message`` answered with ``respond_to_pull_request`` (the library's 0.1.0),
    ``pull_message`` with ``send_message`` (its last version). The re-ask timer is out of
    reach: only answers taken as answers keep the data flowing."""
    settings, erl = over_tls
    async with server(epmd.port, tls=settings, mode="pull", request_atom=request_atom,
                      pull_interval=600) as (node, pipeline, collector, producer):
        peer = await elixir_peer(epmd.port, node, extra_erl=erl)
        with peer:
            assert_over_tls(node, peer)
            await peer.aeval("PbClient.start(:global, :pulled)")
            await collector.wait_for(3000, timeout=30)
            assert collector.data[:3000] == [(Atom("pulled"), n) for n in range(1, 3001)]
            assert len(producer.receiver.outstanding) <= producer.pending_demand
            assert producer.dropped == 0
        assert pipeline.stats()["failed"] == 0
