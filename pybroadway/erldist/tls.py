"""TLS for distribution connections: what OTP's ``inet_tls`` distribution does."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The TLS a node's distribution connections use: ``server`` for the connections it
    accepts, ``client`` for those it dials, and the server name a dial sends and checks
    (``None``: the host part of the peer's node name, as OTP does; ``False``: none)."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    server_name: str | Literal[False] | None = None
