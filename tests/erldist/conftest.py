"""Fixtures the node layer's interop tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pybroadway.erldist import Node
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
