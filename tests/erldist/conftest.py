"""Fixtures the node layer's interop tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from pybroadway.erldist import Node
from testkit.certs import CA, NodeCert, make_ca
from testkit.peers import BeamPeer, SystemEpmd, unique_name


@pytest.fixture
def beam(erl_node: BeamPeer) -> BeamPeer:
    """A started erl node of each OTP release (the session's ``erl_node``)."""
    return erl_node


@pytest.fixture
async def py(epmd: SystemEpmd) -> AsyncIterator[Node]:
    """A Python node on the private EPMD, cookie ``pybroadway`` (the peers' cookie)."""
    async with Node(unique_name("py") + "@localhost", cookie="pybroadway",
                    epmd_port=epmd.port) as node:
        yield node


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
