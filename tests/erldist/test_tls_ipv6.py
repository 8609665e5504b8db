"""Distribution over TLS on IPv6 (``Node(tls=..., ipv6=True)``, as ``erl -proto_dist
inet6_tls``): a BEAM and a Python node named ``name@::1`` connect both ways over ::1, each
checking the other's certificate against the host part of its name (an IP address here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.certs import NodeCert
from testkit.peers import SystemEpmd
from testkit.tls import optfile, tls_settings
from tests.conftest import Pki
from tests.erldist.nodekit import assert_over_tls, tls_beam
from tests.erldist.test_ipv6 import ipv6_node, talk_both_ways

pytestmark = pytest.mark.timeout(60)


async def test_inet6_tls_beam_and_python_connect_both_ways(
        otp: str, epmd: SystemEpmd, pki: Pki, loopback6: NodeCert, tmp_path: Path) -> None:
    options = optfile(tmp_path / "dist.conf", pki.ca, loopback6)
    async with ipv6_node(epmd.port, tls=tls_settings(pki.ca, loopback6)) as node, \
            tls_beam(otp, epmd, options, ipv6=True) as beam:
        # OTP's TLS distribution says inet of every connection (inet_tls_dist:f_address);
        # the address it gives is ::1.
        await talk_both_ways(beam, node, family="inet")
        assert_over_tls(node, beam)
