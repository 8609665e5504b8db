"""The TLS options of distribution, read from the file a BEAM node takes with
``-ssl_dist_optfile``: ``[{server, [Option, ...]}, {client, [Option, ...]}].`` in Erlang term
syntax (:func:`pybroadway.term.consult`). One file serves both: an Elixir node started with
``--erl "-proto_dist inet_tls -ssl_dist_optfile F"`` and ``pybroadway serve
--ssl-dist-optfile F`` read the same options the same way.

The options (ssl's names and meaning; ``server`` for the connections a node accepts,
``client`` for those it dials):

- ``certfile``, ``keyfile`` (default: the key in ``certfile``), ``password`` (of the key):
  the node's certificate. The server needs one; the client, when the server verifies it.
- ``cacertfile``: the CAs that sign the peers' certificates.
- ``verify``: ``verify_peer`` or ``verify_none``. The client verifies by default (OTP 26 and
  later; OTP 25 did not): the server's chain against ``cacertfile`` and its name against the
  server name (see below). The server does not verify by default.
- ``fail_if_no_peer_cert`` (server): with ``verify_peer``, refuse a client without a
  certificate; true by default as in the OTP the guide describes (OTP 25's default was false:
  write it out for a file both read alike). With ``verify_none`` it is an error, as in ssl.
- ``depth``: the most intermediate CAs between a peer's certificate and the CA (if not
  given, OpenSSL's default, 100; ssl's is 10).
- ``versions``: ``['tlsv1.2', 'tlsv1.3']`` or either alone; ``['tlsv1.2']`` if not given, as
  ``inet_tls_dist`` does.
- ``ciphers``: OpenSSL's names, as ``"ECDHE-RSA-AES256-GCM-SHA384:..."`` or a list of such
  strings. They choose among TLS 1.2's suites only: Python's ssl cannot restrict TLS 1.3's,
  so ``ciphers`` with ``'tlsv1.3'`` in ``versions`` is an error rather than a half-kept promise.
- ``server_name_indication`` (client): the name sent and checked instead of the host part of
  the peer's node name (OTP's default), or ``disable``: none sent, and the server's
  certificate checked against the CA only.
- ``secure_renegotiate``: ``true`` (the default; a distribution connection is never
  renegotiated at all here). ``false`` (legacy renegotiation) is not offered.

Any other option, a server option on the client or a client one on the server, a key that
does not load, or a file that does not read is a :class:`TlsOptionsError` that says which, in
one line.
"""

from __future__ import annotations

import _ssl
import ctypes
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pybroadway.erldist.tls import TlsSettings
from pybroadway.errors import PyBroadwayError
from pybroadway.term import Atom, ConsultError, consult

__all__ = ["TlsOptionsError", "read_optfile", "tls_settings"]

#: The versions an option file may name, and Python's.
VERSIONS = {"tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.3": ssl.TLSVersion.TLSv1_3}
#: inet_tls_dist's versions when a file names none.
DEFAULT_VERSIONS = ("tlsv1.2",)
#: The largest option file read (it holds a few paths).
MAX_OPTFILE = 1 << 20

_COMMON = ("certfile", "keyfile", "password", "cacertfile", "verify", "depth", "versions",
           "ciphers", "secure_renegotiate")
#: The options each side reads; any other is an error.
OPTIONS: dict[str, tuple[str, ...]] = {
    "server": (*_COMMON, "fail_if_no_peer_cert"),
    "client": (*_COMMON, "server_name_indication"),
}


class TlsOptionsError(PyBroadwayError, ValueError):
    """An option file or its options cannot make TLS settings; the text says where and why,
    in one line."""


def read_optfile(path: str | Path) -> TlsSettings:
    """The :class:`TlsSettings` of the option file at ``path``; raises
    :class:`TlsOptionsError` naming the file (and the line, the side and the option)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_OPTFILE + 1)
    except OSError as exc:
        raise TlsOptionsError(f"cannot read the TLS option file {path}: "
                              f"{exc.strerror or exc}") from None
    if len(data) > MAX_OPTFILE:
        raise TlsOptionsError(f"{path}: more than {MAX_OPTFILE:,} bytes: not an option file")
    try:
        terms = consult(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TlsOptionsError(f"{path}: not UTF-8 (byte {exc.start})") from None
    except ConsultError as exc:
        raise TlsOptionsError(f"{path}: {exc}") from None
    if len(terms) != 1:
        raise TlsOptionsError(f"{path}: expected one term, [{{server, [...]}}, "
                              f"{{client, [...]}}]., got {len(terms)}")
    try:
        return tls_settings(terms[0])
    except TlsOptionsError as exc:
        raise TlsOptionsError(f"{path}: {exc}") from None


def tls_settings(term: Any) -> TlsSettings:
    """The :class:`TlsSettings` of an option file's term, ``[{server, Options}, {client,
    Options}]`` (each list of ``{Name, Value}``); raises :class:`TlsOptionsError`."""
    sides: dict[str, dict[str, Any]] = {}
    if not isinstance(term, list):
        raise TlsOptionsError("expected a list, [{server, [...]}, {client, [...]}]")
    for entry in term:
        side = _pair(entry, "a {server, [...]} or {client, [...]} tuple")
        if side[0] not in OPTIONS:
            raise TlsOptionsError(f"unknown entry {side[0]!r}: expected server or client")
        if side[0] in sides:
            raise TlsOptionsError(f"{side[0]} is given twice")
        sides[side[0]] = _options(side[0], side[1])
    return TlsSettings(server=_server(sides.get("server", {})),
                       client=_client(sides.get("client", {})),
                       server_name=_server_name(sides.get("client", {})))


def _pair(entry: Any, expected: str) -> tuple[str, Any]:
    if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], Atom)):
        raise TlsOptionsError(f"expected {expected}, got {_shown(entry)}")
    return entry[0].name, entry[1]


def _options(side: str, options: Any) -> dict[str, Any]:
    if not isinstance(options, list):
        raise TlsOptionsError(f"{side}: expected a list of options, got {_shown(options)}")
    found: dict[str, Any] = {}
    for entry in options:
        name, value = _pair(entry, "an option {Name, Value}")
        if name not in OPTIONS[side]:
            other = "client" if side == "server" else "server"
            why = (f"a {other} option" if name in OPTIONS[other] else
                   "not supported by pybroadway (supported: " + ", ".join(OPTIONS[side]) + ")")
            raise TlsOptionsError(f"{side}: option {name}: {why}")
        if name in found:
            raise TlsOptionsError(f"{side}: option {name} is given twice")
        found[name] = value
    return found


def _server(options: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.num_tickets = 0  # a distribution connection is never resumed
    _common("server", options, context)
    if "certfile" not in options:
        raise TlsOptionsError("server: certfile is required (the node's certificate)")
    verify = _verify("server", options, "verify_none")
    fail = options.get("fail_if_no_peer_cert", verify == "verify_peer")
    if not isinstance(fail, bool):
        raise _bad("server", "fail_if_no_peer_cert", fail, "true or false")
    if fail and verify == "verify_none":
        raise TlsOptionsError("server: fail_if_no_peer_cert true needs {verify, verify_peer}")
    if verify == "verify_peer":
        _need_cacertfile("server", options, "the clients' certificates")
        context.verify_mode = ssl.CERT_REQUIRED if fail else ssl.CERT_OPTIONAL
    return context


def _client(options: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _common("client", options, context)
    if _verify("client", options, "verify_peer") == "verify_none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        _need_cacertfile("client", options, "the server's certificate (verify_peer is the "
                         "client's default; {verify, verify_none} checks nothing)")
        # No name sent, none to check: the chain is still checked against the CA.
        context.check_hostname = _server_name(options) is not False
    return context


def _common(side: str, options: dict[str, Any], context: ssl.SSLContext) -> None:
    names = _versions(side, options.get("versions"))
    context.minimum_version = VERSIONS[min(names)]
    context.maximum_version = VERSIONS[max(names)]
    if "ciphers" in options:
        if "tlsv1.3" in names:
            raise TlsOptionsError(f"{side}: option ciphers: Python's ssl cannot restrict "
                                  f"TLS 1.3's suites: with ciphers, give {{versions, "
                                  f"['tlsv1.2']}}")
        ciphers = _ciphers(side, options["ciphers"])
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError:
            raise _bad(side, "ciphers", options["ciphers"],
                       "OpenSSL cipher names this OpenSSL knows") from None
    renegotiate = options.get("secure_renegotiate", True)
    if renegotiate is not True:
        raise _bad(side, "secure_renegotiate", renegotiate,
                   "true (insecure renegotiation is not offered)")
    context.options |= ssl.OP_NO_RENEGOTIATION
    if "depth" in options:
        depth = options["depth"]
        if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= 100:
            raise _bad(side, "depth", depth, "an integer from 0 to 100")
        _set_verify_depth(context, depth)
    _load(side, options, context)


def _load(side: str, options: dict[str, Any], context: ssl.SSLContext) -> None:
    """Load the certificate, its key and the CAs, each file's failure named."""
    files = {name: _string(side, name, options[name])
             for name in ("certfile", "keyfile", "cacertfile") if name in options}
    for name, path in files.items():
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TlsOptionsError(f"{side}: {name}: cannot read {path}: "
                                  f"{exc.strerror or exc}") from None
    if "cacertfile" in files:
        try:
            context.load_verify_locations(cafile=files["cacertfile"])
        except ssl.SSLError as exc:
            raise TlsOptionsError(f"{side}: cacertfile: {files['cacertfile']} holds no "
                                  f"PEM certificate ({exc.reason or exc})") from None
    if "keyfile" in files and "certfile" not in files:
        raise TlsOptionsError(f"{side}: keyfile needs certfile")
    if "password" in options and "certfile" not in files:
        raise TlsOptionsError(f"{side}: password needs certfile (and the key it opens)")
    if "certfile" in files:
        _load_cert_chain(side, context, files["certfile"], files.get("keyfile"),
                         _string(side, "password", options["password"])
                         if "password" in options else None)


class _NoPassword(Exception):
    """The key is encrypted and no password was given (never a prompt on the terminal)."""


def _no_password() -> str:
    raise _NoPassword


def _load_cert_chain(side: str, context: ssl.SSLContext, certfile: str,
                     keyfile: str | None, password: str | None) -> None:
    key = keyfile or certfile
    given: str | Callable[[], str] = _no_password if password is None else password
    try:
        context.load_cert_chain(certfile, keyfile, password=given)
    except _NoPassword:
        raise TlsOptionsError(f"{side}: the key in {key} is encrypted: give its password "
                              f"({{password, \"...\"}})") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            why = f"the key in {key} is not the key of the certificate in {certfile}"
        elif password is not None:
            why = f"cannot load the key in {key}: wrong password, or no PEM key"
        else:
            why = f"cannot load the certificate in {certfile} and the key in {key}: no PEM " \
                  f"certificate or key"
        raise TlsOptionsError(f"{side}: {why}") from None


def _verify(side: str, options: dict[str, Any], default: str) -> str:
    verify = options.get("verify", Atom(default))
    if verify not in (Atom("verify_peer"), Atom("verify_none")):
        raise _bad(side, "verify", verify, "verify_peer or verify_none")
    return str(verify)


def _need_cacertfile(side: str, options: dict[str, Any], whose: str) -> None:
    if "cacertfile" not in options:
        raise TlsOptionsError(f"{side}: verify_peer needs cacertfile, the CAs to check "
                              f"{whose} with")


def _versions(side: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_VERSIONS
    names = tuple(item.name for item in value if isinstance(item, Atom)) \
        if isinstance(value, list) else ()
    if not names or len(names) != len(value) or not set(names) <= VERSIONS.keys():
        raise _bad(side, "versions", value, "a list of 'tlsv1.2' and 'tlsv1.3'")
    return names


def _ciphers(side: str, value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return ":".join(value)
    if isinstance(value, str | bytes) and value:
        return _string(side, "ciphers", value)
    raise _bad(side, "ciphers", value, "OpenSSL cipher names, \"A:B\" or [\"A\", \"B\"] "
               "(ssl's maps and tuples are not read here)")


def _server_name(client: dict[str, Any]) -> str | Literal[False] | None:
    value = client.get("server_name_indication")
    if value is None:
        return None
    if value == Atom("disable"):
        return False
    name = _string("client", "server_name_indication", value)
    if not name:
        raise _bad("client", "server_name_indication", value, "a host name or disable")
    return name


def _string(side: str, name: str, value: Any) -> str:
    """A string option: a string (a charlist in Erlang), a list of character codes or a
    binary, as ssl takes them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    elif isinstance(value, list) and all(isinstance(c, int) and not isinstance(c, bool)
                                         and 0 <= c <= 0x10FFFF for c in value):
        return "".join(map(chr, value))
    raise _bad(side, name, value, "a string")


def _bad(side: str, name: str, value: Any, expected: str) -> TlsOptionsError:
    return TlsOptionsError(f"{side}: option {name}: expected {expected}, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _set_verify_depth(context: ssl.SSLContext, depth: int) -> None:
    """``SSL_CTX_set_verify_depth``, which Python's ssl does not offer: the ``SSL_CTX *`` is
    the first field of CPython's ``_ssl._SSLContext`` after the object header; the call goes
    to the OpenSSL the ``_ssl`` module is linked with. Read back to prove it took."""
    library = ctypes.CDLL(getattr(_ssl, "__file__", None))  # None: built into python
    setter, getter = library.SSL_CTX_set_verify_depth, library.SSL_CTX_get_verify_depth
    setter.argtypes, setter.restype = [ctypes.c_void_p, ctypes.c_int], None
    getter.argtypes, getter.restype = [ctypes.c_void_p], ctypes.c_int
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    setter(pointer, depth)
    if getter(pointer) != depth:
        raise TlsOptionsError("option depth: this Python's ssl could not be given it")
