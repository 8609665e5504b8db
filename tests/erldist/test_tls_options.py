"""The BEAM's TLS option file (-ssl_dist_optfile) made into SSLContexts: proven by a Python
TLS server and client talking over loopback with them, as two nodes' connections would."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybroadway.erldist.tls import TlsSettings
from pybroadway.erldist.tls_options import TlsOptionsError, read_optfile
from pybroadway.term import Atom, decode
from testkit.certs import CA, NodeCert, make_ca
from testkit.peers import BeamPeer, SystemEpmd


@dataclass(frozen=True)
class Pki:
    ca: CA
    node: NodeCert           # localhost, signed by ca
    other_ca: CA
    stranger: NodeCert       # localhost, signed by other_ca
    elsewhere: NodeCert      # elsewhere.example, signed by ca
    locked: NodeCert         # localhost, its key encrypted with "secret"
    far: NodeCert            # localhost, signed by an intermediate of ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, other = make_ca(root / "ca"), make_ca(root / "other", "another CA")
    return Pki(ca, ca.issue(root / "node", "localhost"), other,
               other.issue(root / "stranger", "localhost"),
               ca.issue(root / "elsewhere", "elsewhere.example"),
               ca.issue(root / "locked", "localhost", password="secret"),
               ca.intermediate(root / "sub").issue(root / "far", "localhost"))


@pytest.fixture
def optfile(tmp_path: Path) -> Callable[[str], Path]:
    """Write an option file's text; its path."""
    count = iter(range(100))

    def write(text: str) -> Path:
        path = tmp_path / f"ssl_dist_{next(count)}.conf"
        path.write_text(text)
        return path
    return write


def opts(cert: NodeCert | None = None, ca: CA | None = None, *extra: str) -> str:
    """An option list in Erlang syntax."""
    items = [] if cert is None else [f'{{certfile, "{cert.certfile}"}}',
                                     f'{{keyfile, "{cert.keyfile}"}}']
    items += [] if ca is None else [f'{{cacertfile, "{ca.cacertfile}"}}']
    return "[" + ",\n  ".join([*items, *extra]) + "]"


def both(server: str, client: str) -> str:
    return f"[{{server, {server}}},\n {{client, {client}}}].\n"


@dataclass
class Outcome:
    version: str | None
    cipher: str | None
    client_cert: dict[str, object] | None  # as the server saw it


async def talk(server: TlsSettings, client: TlsSettings,
               server_hostname: str | None = "localhost") -> Outcome:
    """One TLS connection from ``client``'s context to ``server``'s over loopback; raises
    what the client sees if the handshake fails on either side."""
    seen: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object")
        cipher = tls.cipher()
        seen.set_result(Outcome(tls.version(), cipher[0] if cipher else None,
                                writer.get_extra_info("peercert") or None))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(accepted, "127.0.0.1", 0, ssl=server.server)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=client.client, server_hostname=server_hostname), 10)
        try:
            # TLS 1.3: a client certificate is refused after the client's handshake is done
            answer = await asyncio.wait_for(reader.read(2), 10)
        finally:
            writer.close()
        if answer != b"ok":
            raise ConnectionError("the server closed the connection")
        return await asyncio.wait_for(seen, 10)
    finally:
        listener.close()


def settings(optfile: Callable[[str], Path], text: str) -> TlsSettings:
    return read_optfile(optfile(text))


async def test_mutual_tls_both_sides_verifying(pki: Pki, optfile: Callable[[str], Path]
                                               ) -> None:
    mutual = settings(optfile, both(
        opts(pki.node, pki.ca, "{verify, verify_peer}", "{fail_if_no_peer_cert, true}"),
        opts(pki.node, pki.ca, "{verify, verify_peer}")))
    outcome = await talk(mutual, mutual)
    assert outcome.version == "TLSv1.2"  # inet_tls_dist's default versions
    assert outcome.client_cert is not None
    assert dict(entry[0] for entry in outcome.client_cert["subject"]) == {  # type: ignore
        "commonName": "localhost"}
    assert mutual.server_name is None  # the host part of the peer's node name
    assert mutual.server.num_tickets == 0
    assert mutual.server.verify_mode == ssl.CERT_REQUIRED


async def test_the_server_refuses_a_client_without_a_certificate_or_a_stranger(
        pki: Pki, optfile: Callable[[str], Path]) -> None:
    server = settings(optfile, both(opts(pki.node, pki.ca, "{verify, verify_peer}"),
                                    opts(None, pki.ca)))  # fail_if_no_peer_cert: true
    anonymous = settings(optfile, both(opts(pki.node), opts(None, pki.ca)))
    stranger = settings(optfile, both(opts(pki.node), opts(pki.stranger, pki.ca)))
    for client in (anonymous, stranger):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await talk(server, client)
    lenient = settings(optfile, both(
        opts(pki.node, pki.ca, "{verify, verify_peer}", "{fail_if_no_peer_cert, false}"),
        opts(None, pki.ca)))
    assert (await talk(lenient, anonymous)).client_cert is None


async def test_the_client_verifies_the_server_unless_told_not_to(
        pki: Pki, optfile: Callable[[str], Path]) -> None:
    impostor = settings(optfile, both(opts(pki.stranger), opts(None, pki.ca)))
    verifying = settings(optfile, both(opts(pki.node), opts(None, pki.ca)))  # the default
    with pytest.raises(ssl.SSLCertVerificationError):
        await talk(impostor, verifying)
    trusting = settings(optfile, both(opts(pki.node), opts(None, None, "{verify, verify_none}")))
    assert (await talk(impostor, trusting)).version == "TLSv1.2"


async def test_the_server_name_is_checked_or_disabled(pki: Pki,
                                                      optfile: Callable[[str], Path]) -> None:
    elsewhere = settings(optfile, both(opts(pki.elsewhere), opts(None, pki.ca)))
    with pytest.raises(ssl.SSLCertVerificationError, match="localhost"):
        await talk(elsewhere, elsewhere)  # dialling a node @localhost
    named = settings(optfile, both(opts(pki.node), opts(
        None, pki.ca, '{server_name_indication, "elsewhere.example"}')))
    assert named.server_name == "elsewhere.example"
    await talk(elsewhere, named, server_hostname=named.server_name)
    disabled = settings(optfile, both(opts(pki.node), opts(
        None, pki.ca, "{server_name_indication, disable}")))
    assert disabled.server_name is False
    await talk(elsewhere, disabled, server_hostname=None)  # the chain still checked:
    stranger = settings(optfile, both(opts(pki.stranger), opts(None, pki.ca)))
    with pytest.raises(ssl.SSLCertVerificationError):
        await talk(stranger, disabled, server_hostname=None)


async def test_an_encrypted_key_and_its_password(pki: Pki, optfile: Callable[[str], Path]
                                                 ) -> None:
    locked = settings(optfile, both(opts(pki.locked, None, '{password, "secret"}'),
                                    opts(None, pki.ca)))
    assert (await talk(locked, locked)).version == "TLSv1.2"
    with pytest.raises(TlsOptionsError, match=r"server: cannot load the key in .*key\.pem: "
                                              r"wrong password"):
        settings(optfile, both(opts(pki.locked, None, '{password, "guess"}'),
                               opts(None, pki.ca)))
    with pytest.raises(TlsOptionsError, match="is encrypted: give its password"):
        settings(optfile, both(opts(pki.locked), opts(None, pki.ca)))


async def test_versions_and_ciphers(pki: Pki, optfile: Callable[[str], Path]) -> None:
    modern = settings(optfile, both(opts(pki.node, None, "{versions, ['tlsv1.3']}"),
                                    opts(None, pki.ca, "{versions, ['tlsv1.3']}")))
    assert (await talk(modern, modern)).version == "TLSv1.3"
    old = settings(optfile, both(opts(pki.node), opts(None, pki.ca)))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await talk(modern, old)
    either = settings(optfile, both(opts(pki.node, None, "{versions, ['tlsv1.2', 'tlsv1.3']}"),
                                    opts(None, pki.ca, "{versions, ['tlsv1.3', 'tlsv1.2']}")))
    assert (await talk(either, either)).version == "TLSv1.3"
    assert (await talk(either, old)).version == "TLSv1.2"
    suite = "ECDHE-RSA-AES128-GCM-SHA256"
    chosen = settings(optfile, both(opts(pki.node, None, f'{{ciphers, "{suite}"}}'),
                                    opts(None, pki.ca, f'{{ciphers, ["{suite}"]}}')))
    assert (await talk(chosen, chosen)).cipher == suite


async def test_depth_bounds_the_intermediate_cas(pki: Pki, optfile: Callable[[str], Path]
                                                 ) -> None:
    far = settings(optfile, both(opts(pki.far), opts(None, pki.ca)))
    assert (await talk(far, far)).version == "TLSv1.2"  # root -> intermediate -> node
    shallow = settings(optfile, both(opts(pki.node), opts(None, pki.ca, "{depth, 0}")))
    with pytest.raises(ssl.SSLCertVerificationError):
        await talk(far, shallow)
    assert (await talk(pki_server(pki, optfile), shallow)).version == "TLSv1.2"
    deep_enough = settings(optfile, both(opts(pki.node), opts(None, pki.ca, "{depth, 1}")))
    await talk(far, deep_enough)


def pki_server(pki: Pki, optfile: Callable[[str], Path]) -> TlsSettings:
    return settings(optfile, both(opts(pki.node), opts(None, pki.ca)))


@pytest.mark.parametrize(("server", "client", "says"), [
    ("{reuse_sessions, true}", "", "server: option reuse_sessions: not supported by pybroadway"),
    ("", "{verify_fun, {fun mydist:verify/3, []}}", "client: option verify_fun: not supported"),
    ("{server_name_indication, disable}", "", "server: option server_name_indication: a "
                                              "client option"),
    ("", "{fail_if_no_peer_cert, true}", "client: option fail_if_no_peer_cert: a server option"),
    ("{verify, verify_peer}", "", "server: verify_peer needs cacertfile"),
    ("{fail_if_no_peer_cert, true}", "", "needs {verify, verify_peer}"),
    ("{verify, sometimes}", "", "server: option verify: expected verify_peer or verify_none, "
                                "got Atom('sometimes')"),
    ("{versions, ['tlsv1.1']}", "", "option versions: expected a list of 'tlsv1.2' and"),
    ("", "{versions, ['tlsv1.3']}, {ciphers, \"AES128-SHA\"}",
     "client: option ciphers: Python's ssl cannot restrict TLS 1.3's suites"),
    ("{ciphers, \"NO-SUCH-CIPHER\"}", "", "option ciphers: expected OpenSSL cipher names"),
    ("{ciphers, [#{}]}".replace("#{}", "{rsa, aes_128_gcm, aead, sha256}"), "",
     "ssl's maps and tuples are not read here"),
    ("{secure_renegotiate, false}", "", "secure_renegotiate: expected true"),
    ("{depth, -1}", "", "option depth: expected an integer from 0 to 100"),
    ("{verify, verify_none}, {verify, verify_peer}", "", "server: option verify is given twice"),
    ("", "{server_name_indication, 42}", "server_name_indication: expected a string"),
    ("{cacertfile, \"/no/such/ca.pem\"}", "", "server: cacertfile: cannot read /no/such/ca.pem: "
                                              "No such file or directory"),
])
def test_bad_options_are_named(pki: Pki, optfile: Callable[[str], Path], server: str,
                               client: str, says: str) -> None:
    server_opts = opts(pki.node, None, *filter(None, [server]))
    client_opts = opts(None, pki.ca, *filter(None, [client]))
    path = optfile(both(server_opts, client_opts))
    with pytest.raises(TlsOptionsError) as info:
        read_optfile(path)
    assert str(info.value).startswith(f"{path}: ")
    assert says in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "says"), [
    ("[{server, []}, {client, []}].", "server: certfile is required"),
    ("[{server, [{certfile, \"/no/cert.pem\"}]}].", "server: certfile: cannot read /no/cert.pem"),
    ("[{server,\n  [{certfile, \"x\"}\n  {keyfile, \"y\"}]}].",
     "line 3: expected ',' or ']' (for the '[' of line 2), got '{'"),
    ("[{server, []}]. [].", "expected one term"),
    ("{server, []}.", "expected a list, [{server, [...]}, {client, [...]}]"),
    ("[{serve, []}].", "unknown entry 'serve': expected server or client"),
    ("[{server, [verify_peer]}].", "expected an option {Name, Value}, got Atom('verify_peer')"),
    ("", "expected one term"),
])
def test_bad_files_are_named(optfile: Callable[[str], Path], text: str, says: str) -> None:
    path = optfile(text)
    with pytest.raises(TlsOptionsError) as info:
        read_optfile(path)
    assert str(info.value).startswith(f"{path}: ")
    assert says in str(info.value)


def test_a_missing_file_and_a_mismatched_key(pki: Pki, optfile: Callable[[str], Path],
                                             tmp_path: Path) -> None:
    with pytest.raises(TlsOptionsError, match=r"cannot read the TLS option file .*: No such file"):
        read_optfile(tmp_path / "absent.conf")
    mismatched = optfile(both(f'[{{certfile, "{pki.node.certfile}"}}, '
                              f'{{keyfile, "{pki.stranger.keyfile}"}}]', "[]"))
    with pytest.raises(TlsOptionsError, match="is not the key of the certificate"):
        read_optfile(mismatched)


async def test_the_beam_reads_the_same_file(pki: Pki, optfile: Callable[[str], Path],
                                            epmd: SystemEpmd) -> None:
    # One file: two BEAM nodes connect over TLS with it (-ssl_dist_optfile), each verifying
    # the other, and Python makes contexts from it that do the same. Debian's OTP 25 (the
    # OTP 28 runtime of the tests has no ssl application).
    shared = optfile(both(
        opts(pki.node, pki.ca, "{verify, verify_peer}", "{fail_if_no_peer_cert, true}",
             "{versions, ['tlsv1.2', 'tlsv1.3']}"),
        opts(pki.node, pki.ca, "{verify, verify_peer}", "{versions, ['tlsv1.2', 'tlsv1.3']}")))
    tls = ["-proto_dist", "inet_tls", "-ssl_dist_optfile", str(shared)]
    with BeamPeer.erlang("25", epmd_port=epmd.port, extra=tls) as first, \
            BeamPeer.erlang("25", epmd_port=epmd.port, extra=tls) as second:
        first.wait_started()
        second.wait_started()
        assert decode(second.eval(f"net_adm:ping('{first.node}')")) == Atom("pong")
        # the connection's #net_address{protocol = tls}
        assert decode(second.eval(f"element(4, proplists:get_value(address, element(2, "
                                  f"net_kernel:node_info('{first.node}'))))")) == Atom("tls")
    settings = read_optfile(shared)
    assert (await talk(settings, settings)).version == "TLSv1.3"
