"""The receiver runs under the node's supervisor: killed, it comes back under both names and
new clients find it; killed too often, the node stops and ``serve`` exits non-zero saying
why."""

from __future__ import annotations

import sys

import pytest

from pybroadway.erldist import global_names
from pybroadway.otp_distribution import DEFAULT_NAME
from pybroadway.term import Atom, decode
from testkit.peers import SystemEpmd
from testkit.wait import eventually_async
from tests.otp_distribution.helpers import elixir_peer, receiver_ref, server
from tests.otp_distribution.test_server_cli import examples_client, running


async def test_a_killed_receiver_comes_back_and_clients_register_again(
        epmd: SystemEpmd) -> None:
    async with server(epmd.port) as (node, _pipeline, collector, producer):
        first = producer.receiver
        peer = await elixir_peer(epmd.port, node)
        with peer:
            ref = receiver_ref(node)
            await peer.aeval(f"{{:ok, c}} = PbClient.start({ref}, :a); Process.put(:c, c)")
            await eventually_async(lambda: first.clients)
            # An exit signal from the BEAM side, as any linked crash would send.
            await peer.aeval(f":global.sync(); Process.exit(:global.whereis_name(:{DEFAULT_NAME}),"
                             " :kill)")
            await first.wait()
            # Back under its local name, then (registration done) its :global one.
            await eventually_async(lambda: producer.receiver is not first and global_names
                                   .whereis_name(node, DEFAULT_NAME) == producer.receiver.pid)
            second = producer.receiver
            assert node.whereis(DEFAULT_NAME) == second.pid
            # A new process that knows no clients: the old ones must register again (the
            # library's Elixir clients do not by themselves).
            assert second.pid != first.pid
            assert second.clients == {}
            found = decode(await peer.aeval(
                f":global.sync(); :global.whereis_name(:{DEFAULT_NAME})"))
            assert found == second.pid
            # The old client's monitor fired; a client registers with the new receiver and
            # what it pushes arrives.
            await peer.aeval(f"{{:ok, c2}} = PbClient.start({ref}, :b); "
                             f"GenServer.cast(c2, {{:push_message, :after}})")
            await collector.wait_for(1, timeout=10)
            assert collector.data == [Atom("after")]


@pytest.mark.beam  # an Elixir node does the killing
def test_serve_exits_non_zero_when_the_node_cannot_serve() -> None:
    with running([sys.executable, "-m", "pybroadway", "serve"]) as server_process:
        server_process.wait_logged(" serves off_broadway_otp_distribution_receiver")
        with examples_client(server_process) as peer:
            # Killed again each time it comes back, faster than kernel_sup's intensity allows.
            peer.eval(f"for _ <- 1..10 do case :global.whereis_name(:{DEFAULT_NAME}) do "
                      ":undefined -> :ok; pid -> Process.exit(pid, :kill) end; "
                      ":global.sync(); Process.sleep(20) end")
            assert server_process.proc.wait(30) == 1
        lines = server_process.stderr
        assert any("cannot serve" in line for line in lines)
        assert lines[-1].startswith("pybroadway serve: node ") and "gave up" in lines[-1]
