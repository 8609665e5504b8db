"""Session-wide fixtures: a private epmd and the OTP runtimes the interop tests run against.

Every test that uses them (directly or through another fixture) is marked ``beam``, so that
``pytest -m "not beam"`` runs everything that needs no Erlang or Elixir installed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pybroadway import _arguments, cli
from pybroadway.erldist import Node
from pybroadway.erldist.tls import TlsSettings
from pybroadway.workers import _worker
from testkit.certs import CA, NodeCert, make_ca
from testkit.genstage import standin_dir
from testkit.netns import NETNS_ETC, require_netns
from testkit.peers import OTP_RELEASES, BeamPeer, SystemEpmd
from testkit.tls import optfile, tls_settings
from tests.erldist.nodekit import assert_over_tls, atom, ev, python_node, tls_beam

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
    theirs is left (theirs: named after this process, whose hosts are tagged with its pid;
    another test run may have hosts of its own meanwhile)."""
    require_netns()
    before = _root_links()
    yield
    ours = f"pbns{os.getpid()}x"
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout
    assert ours not in namespaces
    assert _root_links() == before
    assert not any(p.name.startswith(ours) for p in NETNS_ETC.glob("*"))


@contextlib.asynccontextmanager
async def connected_standins(epmd: SystemEpmd, otp: str, tls: TlsSettings | None = None,
                             options: Path | None = None
                             ) -> AsyncIterator[tuple[Node, BeamPeer]]:
    """A Python node and a connected Erlang node that has the GenStage stand-ins loaded, over
    TLS with ``tls`` (the Python node's) and ``options`` (the BEAM's option file)."""
    async with python_node(epmd.port, tls=tls) as node, \
            tls_beam(otp, epmd, options, extra=("-pa", standin_dir())) as peer:
        assert await ev(peer, f"net_kernel:connect_node({atom(node)})") is True
        if tls is not None:
            assert_over_tls(node, peer)
        yield node, peer


@pytest.fixture
async def standin_pair(epmd: SystemEpmd, otp: str) -> AsyncIterator[tuple[Node, BeamPeer]]:
    """A Python node and a connected Erlang node that has the GenStage stand-ins loaded."""
    async with connected_standins(epmd, otp) as pair:
        yield pair


@pytest.fixture(params=["tcp", "tls"])
async def standin_pair_tcp_tls(request: pytest.FixtureRequest, epmd: SystemEpmd, otp: str,
                               pki: Pki, tmp_path: Path
                               ) -> AsyncIterator[tuple[Node, BeamPeer]]:
    """``standin_pair``, connected over plain TCP, then over TLS (both nodes with ``pki``'s
    node certificate)."""
    if request.param == "tcp":
        pair = connected_standins(epmd, otp)
    else:
        pair = connected_standins(epmd, otp, tls_settings(pki.ca, pki.node),
                                  optfile(tmp_path / "dist.conf", pki.ca, pki.node))
    async with pair as (node, peer):
        yield node, peer


@dataclass(frozen=True)
class Pki:
    """Certificates for TLS tests, all for the host ``localhost`` every test node uses:
    ``node`` signed by ``ca``, ``stranger`` by ``other_ca``, ``expired`` by ``ca`` but
    expired."""

    ca: CA
    other_ca: CA
    node: NodeCert
    stranger: NodeCert
    expired: NodeCert


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, other_ca = make_ca(root / "ca"), make_ca(root / "other-ca", "another CA")
    return Pki(ca, other_ca, ca.issue(root / "node", "localhost"),
               other_ca.issue(root / "stranger", "localhost"),
               ca.issue(root / "expired", "localhost", days=-1))


@pytest.fixture(scope="session")
def loopback6(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> NodeCert:
    """A certificate for the host ``::1`` (nodes named ``…@::1``), signed by ``pki.ca``."""
    return pki.ca.issue(tmp_path_factory.mktemp("v6"), "::1")


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> list[Node]:
    """The nodes serve, ping and worker make (real ones, recorded as they are made)."""
    made: list[Node] = []

    class Recorded(Node):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)
    monkeypatch.setattr(cli, "Node", Recorded)
    monkeypatch.setattr(_arguments, "Node", Recorded)  # ping's and reload's
    monkeypatch.setattr(_worker, "Node", Recorded)
    return made
