"""Session-wide fixtures: a private epmd and the OTP runtimes the interop tests run against.

Every test that uses them (directly or through another fixture) is marked ``beam``, so that
``pytest -m "not beam"`` runs everything that needs no Erlang or Elixir installed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from pybroadway.erldist import Node
from testkit.genstage import standin_dir
from testkit.netns import NETNS_ETC, require_netns
from testkit.peers import OTP_RELEASES, BeamPeer, SystemEpmd
from tests.erldist.nodekit import atom, ev, python_node, started

BEAM_FIXTURES = frozenset({"epmd", "otp"})
"""Fixtures that start or choose a BEAM program; every BEAM fixture depends on one of them."""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BEAM_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.beam)


@pytest.fixture(scope="session")
def epmd() -> Iterator[SystemEpmd]:
    """Debian's epmd on a private port, exported as ERL_EPMD_PORT for the whole session."""
    daemon = SystemEpmd()
    previous = os.environ.get("ERL_EPMD_PORT")
    os.environ["ERL_EPMD_PORT"] = str(daemon.port)
    yield daemon
    if previous is None:
        os.environ.pop("ERL_EPMD_PORT", None)
    else:
        os.environ["ERL_EPMD_PORT"] = previous
    daemon.stop()


@pytest.fixture(params=OTP_RELEASES, ids=lambda otp: f"otp{otp}")
def otp(request: pytest.FixtureRequest) -> str:
    """Runs the test once against each OTP release."""
    release: str = request.param
    return release


@pytest.fixture
def erl_node(epmd: SystemEpmd, otp: str) -> Iterator[BeamPeer]:
    """A fresh distributed erl node (of each OTP release) registered with the private epmd."""
    with BeamPeer.erlang(otp, epmd_port=epmd.port) as peer:
        peer.wait_started()
        yield peer


def _root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip() for line in out.splitlines())


@pytest.fixture
def leaves_nothing() -> Iterator[None]:
    """For tests of simulated hosts: afterwards no namespace, link or /etc/netns entry of
    theirs is left (theirs: named after this process, as another run's may exist meanwhile)."""
    require_netns()
    before = _root_links()
    yield
    ours = f"pbns{os.getpid()}x"  # testkit.netns.Hosts's prefix and pid
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout
    assert ours not in namespaces
    assert _root_links() == before
    assert not any(p.name.startswith(ours) for p in NETNS_ETC.glob("*"))


@pytest.fixture
async def standin_pair(epmd: SystemEpmd, otp: str) -> AsyncIterator[tuple[Node, BeamPeer]]:
    """A Python node and a connected Erlang node that has the GenStage stand-ins loaded."""
    async with python_node(epmd.port) as node:
        peer = BeamPeer.erlang(otp, epmd_port=epmd.port, extra=["-pa", standin_dir()])
        async with started(peer):
            assert await ev(peer, f"net_kernel:connect_node({atom(node)})") is True
            yield node, peer
