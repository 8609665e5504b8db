"""The node's EPMD registration is kept: when its EPMD stops and another starts on the port,
the node registers again, and BEAM nodes find it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from pybroadway.erldist import epmd as epmd_client
from pybroadway.erldist.node import Node
from pybroadway.term import Atom, decode
from testkit.peers import BeamPeer, free_port, require, unique_name, wait_for_port
from testkit.wait import eventually_async

pytestmark = [pytest.mark.timeout(60), pytest.mark.beam]


class Epmd:
    """Erlang's epmd on a given port, restartable."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([require("epmd", "epmd"), "-port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def epmd_daemon() -> Iterator[Epmd]:
    daemon = Epmd(free_port())
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


async def test_the_node_registers_again_when_its_epmd_comes_back(epmd_daemon: Epmd) -> None:
    async with Node(f"{unique_name('kept')}@localhost", cookie="pybroadway",
                    epmd_port=epmd_daemon.port) as node:
        epmd_daemon.stop()
        epmd_daemon.start()  # a new epmd: it knows no one

        async def registered() -> bool:
            found = await epmd_client.port_please(node.alive_name, epmd_port=epmd_daemon.port)
            return found is not None

        await eventually_async(registered, timeout=15)
        with BeamPeer.erlang("25", epmd_port=epmd_daemon.port) as peer:
            peer.wait_started()
            assert decode(await peer.aeval(f"net_adm:ping('{node.name.name}')")) == \
                Atom("pong")
