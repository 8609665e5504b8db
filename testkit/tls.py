"""TLS distribution for tests and benchmarks: a Python node's :class:`TlsSettings` and a BEAM
node's ``-proto_dist inet_tls`` arguments, from certificates made by :mod:`testkit.certs`.

Both sides are set up as OTP's guide sets up mutual TLS: each presents its certificate, and
each requires the other's, signed by the CA it trusts (``verify_peer`` and
``fail_if_no_peer_cert``); a dialling node checks the host part of the name it dials.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pybroadway.erldist.tls import TlsSettings
from testkit.certs import CA, NodeCert

DEBIAN_LIB = Path("/usr/lib/erlang/lib")
"""The unpacked OTP 28 runtime has no ssl application: its nodes load Debian's (OTP 25's) ssl,
public_key and asn1, on top of their own kernel (dist_util), crypto and stdlib."""


def tls_settings(ca: CA | None, cert: NodeCert | None) -> TlsSettings:
    """A Python node trusting ``ca`` and presenting ``cert`` (None: neither)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    server.num_tickets = 0  # OTP's distribution resumes no sessions
    for context in (server, client):
        if cert is not None:
            context.load_cert_chain(cert.certfile, cert.keyfile)
        if ca is not None:
            context.load_verify_locations(ca.cacertfile)
    server.verify_mode = ssl.CERT_REQUIRED
    return TlsSettings(server=server, client=client)


def optfile(path: Path, ca: CA | None, cert: NodeCert | None, *,
            versions: tuple[str, ...] = ()) -> Path:
    """Write a BEAM's ``-ssl_dist_optfile`` to ``path``: mutual TLS, trusting ``ca`` and
    presenting ``cert`` (None: neither); ``versions`` as ``'tlsv1.3'`` (default: OTP's, which
    is TLS 1.2 for distribution)."""
    def options(side: str) -> str:
        items = ["{verify, verify_peer}"]
        if side == "server":
            items.append("{fail_if_no_peer_cert, true}")
        if cert is not None:
            items += [f'{{certfile, "{cert.certfile}"}}', f'{{keyfile, "{cert.keyfile}"}}']
        if ca is not None:
            items.append(f'{{cacertfile, "{ca.cacertfile}"}}')
        if versions:
            items.append(f"{{versions, [{', '.join(repr(v) for v in versions)}]}}")
        return f"{{{side}, [{', '.join(items)}]}}"

    path.write_text(f"[{options('server')},\n {options('client')}].\n")
    return path


def beam_args(otp: str, options: Path, proto_dist: str = "inet_tls") -> list[str]:
    """The ``erl`` arguments of a node of release ``otp`` using TLS distribution
    (``proto_dist``: ``inet6_tls`` over IPv6)."""
    borrowed: list[str] = []
    if otp != "25":
        for app in ("ssl", "public_key", "asn1"):
            borrowed += ["-pa", *map(str, sorted(DEBIAN_LIB.glob(f"{app}-*/ebin")))]
    return [*borrowed, "-proto_dist", proto_dist, "-ssl_dist_optfile", str(options)]
