"""The settings a node's connections are made with."""

from __future__ import annotations

from dataclasses import dataclass

from pybroadway.erldist.tls import TlsSettings
from pybroadway.term import Atom


@dataclass(frozen=True, slots=True)
class DistSettings:
    """What a node's connections are made with, fixed for as long as the node runs: who it
    is (``name``, ``cookie``, ``flags``), how long a peer may take (``ticktime``,
    ``handshake_timeout``, ``connect_timeout``), and what a peer may make it hold (see
    :class:`~pybroadway.erldist.node.Node` for each option)."""

    name: Atom
    cookie: str
    flags: int
    ticktime: float
    handshake_timeout: float
    connect_timeout: float
    max_frame_size: int
    max_inflated: int
    max_handshakes: int
    max_pending_output: int
    max_total_pending_output: int
    epmd_port: int | None
    tls: TlsSettings | None = None  # None: plain TCP (inet_tcp / inet6_tcp)
    ipv6: bool = False  # listen, dial and reach EPMD over IPv6 (inet6_tcp / inet6_tls)
