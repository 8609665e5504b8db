"""Certificates for TLS tests, made with the ``openssl`` command a user runs (no Python
crypto library: what the tests make is what the TLS guide tells a user to make).

    ca = make_ca(tmp_path / "ca")
    node = ca.issue(tmp_path / "node", "localhost")          # valid for ten years
    old = ca.issue(tmp_path / "old", "localhost", days=-1)   # expired yesterday
    sub = ca.intermediate(tmp_path / "sub")                  # a CA the root signs
    far = sub.issue(tmp_path / "far", "localhost")           # its certfile: cert, then sub's

Keys are RSA 2048 without a password unless ``password`` is given.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class NodeCert:
    """A certificate and its key, as files."""

    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class CA:
    """A self-signed certificate authority: ``cacertfile`` is what peers trust."""

    cacertfile: Path
    keyfile: Path
    #: The certificates between this CA and the root (an intermediate's own first), which
    #: the certificates it issues carry after their own.
    chain: tuple[Path, ...] = ()

    def issue(self, directory: Path, host: str, *, days: int = 3650,
              password: str | None = None) -> NodeCert:
        """A certificate for ``host`` (its CN and subjectAltName, as OTP checks the host part
        of a node name), signed by this CA. ``days=-1`` makes one that expired yesterday.

        An address is named twice, as an IP address (what Python checks an address against)
        and as a DNS name: OTP 25's ssl checks the name it dials, ``::1`` too, as a DNS name
        only (``{server_name_indication, "::1"}``: a DNS-ID)."""
        directory.mkdir(parents=True, exist_ok=True)
        key, csr, cert = directory / "key.pem", directory / "req.csr", directory / "cert.pem"
        encrypt = ["-passout", f"pass:{password}"] if password else ["-nodes"]
        _openssl("req", "-newkey", "rsa:2048", *encrypt, "-keyout", key, "-out", csr,
                 "-subj", f"/CN={host}")
        san = f"IP:{host},DNS:{host}" if _is_address(host) else f"DNS:{host}"
        ext = directory / "ext.cnf"
        ext.write_text(f"subjectAltName={san}\n")
        _openssl("x509", "-req", "-in", csr, "-CA", self.cacertfile, "-CAkey", self.keyfile,
                 "-CAcreateserial", "-out", cert, "-days", str(days), "-extfile", ext)
        if self.chain:
            cert.write_bytes(b"".join(path.read_bytes() for path in (cert, *self.chain)))
        return NodeCert(cert, key)

    def intermediate(self, directory: Path, name: str = "pybroadway intermediate CA") -> CA:
        """A CA this one signs: peers trust the root, the certificates it issues carry it."""
        directory.mkdir(parents=True, exist_ok=True)
        key, csr, cert = directory / "ca.key", directory / "ca.csr", directory / "ca.pem"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                 "-subj", f"/CN={name}")
        ext = directory / "ext.cnf"
        ext.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign,cRLSign\n")
        _openssl("x509", "-req", "-in", csr, "-CA", self.cacertfile, "-CAkey", self.keyfile,
                 "-CAcreateserial", "-out", cert, "-days", "3650", "-extfile", ext)
        return CA(cert, key, (cert, *self.chain))


def _is_address(host: str) -> bool:
    return ":" in host or host.replace(".", "").isdigit()


def make_ca(directory: Path, name: str = "pybroadway test CA") -> CA:
    """A new CA in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / "ca.key", directory / "ca.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
             "-days", "3650", "-subj", f"/CN={name}")
    return CA(cert, key)
