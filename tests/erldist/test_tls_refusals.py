"""Distribution over TLS refuses what it must, each time with one log line saying why, holding
nothing afterwards, and goes on serving the nodes it should: a certificate from another CA,
an expired one, none, plain TCP against TLS and TLS against plain TCP, a TLS handshake that
stalls, and (TLS 1.3) our own certificate refused after our side of the handshake."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from pybroadway.erldist import Node
from pybroadway.erldist import epmd as epmd_client
from pybroadway.erldist.handshake import TlsRefused
from pybroadway.term import Atom
from testkit.certs import CA, NodeCert
from testkit.peers import BeamPeer, SystemEpmd
from testkit.tls import optfile, tls_settings
from testkit.wait import eventually_async
from tests.conftest import Pki
from tests.erldist.nodekit import atom, ev, python_node, tls_beam

pytestmark = pytest.mark.timeout(90)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("pybroadway")]


async def one_warning(caplog: pytest.LogCaptureFixture, *expected: str) -> str:
    """Wait for the warning that says ``expected``; it must be the only one."""
    await eventually_async(lambda: warnings(caplog), timeout=10)
    await asyncio.sleep(0.2)  # (a second line would come at once)
    lines = warnings(caplog)
    assert len(lines) == 1, lines
    assert all(part in lines[0] for part in expected), lines[0]
    return lines[0]


def holds_nothing(node: Node) -> bool:
    net = node._net
    return net._handshaking == 0 and not net._pending and not net.live


async def serves_a_legitimate_node(node: Node, epmd: SystemEpmd, pki: Pki) -> None:
    async with python_node(epmd.port, tls=tls_settings(pki.ca, pki.node)) as friend:
        assert await friend.connect(node.name, check=True)
        assert friend.name in node.nodes()


def beam(otp: str, epmd: SystemEpmd, tmp_path: Path, ca: CA | None, cert: NodeCert | None,
         *, tls: bool = True, versions: tuple[str, ...] = ()
         ) -> contextlib.AbstractAsyncContextManager[BeamPeer]:
    """A started erl node trusting ``ca`` and presenting ``cert`` (with ``tls``)."""
    return tls_beam(otp, epmd, optfile(tmp_path / "dist.conf", ca, cert, versions=versions)
                    if tls else None)


@pytest.mark.parametrize(("presents", "expected"), [
    ("stranger", ("we refused the peer's certificate", "not signed by a CA we trust")),
    ("expired", ("we refused the peer's certificate", "certificate has expired")),
    ("none", ("the peer sent no certificate",)),
    ("plain", ("the peer does not speak TLS",)),
])
async def test_python_refuses_a_beam(presents: str, expected: tuple[str, ...], otp: str,
                                     epmd: SystemEpmd, pki: Pki, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway")
    cert = {"stranger": pki.stranger, "expired": pki.expired}.get(presents)
    async with python_node(epmd.port, tls=tls_settings(pki.ca, pki.node)) as node, \
            beam(otp, epmd, tmp_path, pki.ca, cert, tls=presents != "plain") as peer:
        assert await ev(peer, f"net_kernel:connect_node({atom(node)})") is False
        line = await one_warning(caplog, "refused a TLS connection from 127.0.0.1:", *expected)
        assert holds_nothing(node), line
        await serves_a_legitimate_node(node, epmd, pki)
        assert node.running


async def test_a_plain_python_node_refuses_a_tls_beam_at_once(
        otp: str, epmd: SystemEpmd, pki: Pki, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway")
    async with python_node(epmd.port, handshake_timeout=30) as node, \
            beam(otp, epmd, tmp_path, pki.ca, pki.node) as peer:
        started_at = asyncio.get_running_loop().time()
        assert await ev(peer, f"net_kernel:connect_node({atom(node)})") is False
        await one_warning(caplog, "the peer speaks TLS", "this node does not")
        assert asyncio.get_running_loop().time() - started_at < 10  # not the timeout's end
        assert holds_nothing(node)


async def test_a_stalled_tls_handshake_is_freed_after_the_timeout(
        epmd: SystemEpmd, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway")
    async with python_node(epmd.port, tls=tls_settings(pki.ca, pki.node),
                           handshake_timeout=1.5) as node:
        address = await epmd_client.port_please(node.alive_name, epmd_port=epmd.port)
        assert address is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", address.port)
        writer.write(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, no more
        await eventually_async(lambda: node._net._handshaking == 1)
        await serves_a_legitimate_node(node, epmd, pki)  # meanwhile
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the node
        await one_warning(caplog, "refused a TLS connection from 127.0.0.1:",
                          "did not finish within 1.5s")
        assert holds_nothing(node)
        writer.close()


async def test_python_refuses_a_beam_whose_certificate_is_from_another_ca(
        otp: str, epmd: SystemEpmd, pki: Pki, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway")
    async with python_node(epmd.port, tls=tls_settings(pki.ca, pki.node)) as node, \
            beam(otp, epmd, tmp_path, pki.ca, pki.stranger) as peer:
        assert await node.connect(peer.node) is False
        await one_warning(caplog, f"TLS handshake to {peer.node} failed",
                          "we refused the peer's certificate", "not signed by a CA we trust")
        assert holds_nothing(node)
        with pytest.raises(TlsRefused, match="we refused the peer's certificate"):
            await node.connect(peer.node, check=True)


async def test_our_certificate_refused_after_a_tls13_handshake_is_a_refusal(
        otp: str, epmd: SystemEpmd, pki: Pki, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Under TLS 1.3 the client's handshake is done before the server has checked its
    certificate: the refusal comes at the first read, and is reported as one."""
    caplog.set_level(logging.INFO, logger="pybroadway")
    async with python_node(epmd.port, tls=tls_settings(pki.ca, pki.stranger)) as node, \
            beam(otp, epmd, tmp_path, pki.ca, pki.node, versions=("tlsv1.3",)) as peer:
        with pytest.raises(TlsRefused, match="the peer refused our certificate"):
            await node.connect(peer.node, check=True)
        line = await one_warning(caplog, f"to {peer.node} failed",
                                 "the peer refused our certificate")
        assert "socket error" not in line
        assert holds_nothing(node)
        assert Atom(peer.node) not in node.nodes()


@pytest.mark.parametrize(("ours", "expected"), [
    ("plain", "the peer speaks TLS"),
    ("tls", "did not finish within 1.5s"),
])
async def test_python_dialling_a_beam_of_the_other_kind_says_so(
        ours: str, expected: str, otp: str, epmd: SystemEpmd, pki: Pki, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway")
    tls = tls_settings(pki.ca, pki.node) if ours == "tls" else None
    async with python_node(epmd.port, tls=tls, handshake_timeout=1.5) as node, \
            beam(otp, epmd, tmp_path, pki.ca, pki.node, tls=ours == "plain") as peer:
        assert await node.connect(peer.node) is False
        await one_warning(caplog, f"to {peer.node} failed", expected)
        assert holds_nothing(node)


async def test_a_huge_handshake_message_announced_inside_tls_is_refused_unread(
        epmd: SystemEpmd, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    """A 4-byte header could announce 4 GiB from a peer that has not shown the cookie: the
    node refuses it on its header, as it could never be a handshake message."""
    caplog.set_level(logging.INFO, logger="pybroadway")
    settings = tls_settings(pki.ca, pki.node)
    async with python_node(epmd.port, tls=settings) as node:
        address = await epmd_client.port_please(node.alive_name, epmd_port=epmd.port)
        assert address is not None
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", address.port, ssl=settings.client, server_hostname="localhost")
        writer.write((1 << 30).to_bytes(4, "big") + b"N")
        with contextlib.suppress(OSError):
            assert await asyncio.wait_for(reader.read(), 5) == b""
        await one_warning(caplog, "a handshake message of 1073741824 bytes announced")
        assert holds_nothing(node)
        writer.close()
