"""The distribution handshake (``dist_util.erl``), both directions, over asyncio streams.

During the handshake every message is framed with a 2-byte big-endian length over TCP, a
4-byte one inside TLS (``header_size``: OTP opens its TLS sockets with ``{packet, 4}``). When
:func:`accept` or :func:`connect` returns, exactly the handshake bytes have been consumed from
the reader: the caller goes on with 4-byte framing (pybroadway.erldist.framing takes over).

Simultaneous connects and the ``alive`` status
-----------------------------------------------
On the accepting side the *node* decides what status to answer, through
``on_name(peer_name, peer_flags)`` which returns (or awaits to) one of:

``"ok"``
    go on;
``"ok_simultaneous"``
    go on (the node drops its own pending attempt to that peer);
``"nok"`` / ``"not_allowed"``
    the status is sent, the connection is closed and :class:`HandshakeRejected` is raised;
``"alive"``
    the node already has a connection to that peer. The peer answers ``true`` (it wants this
    new connection: the handshake continues, and the returned :attr:`PeerInfo.replaced` is
    True — once the handshake succeeded the node must drop its old connection) or ``false``
    (:class:`HandshakeRejected` is raised).

On the connecting side a received ``alive`` is answered with the result of the optional
``on_alive(peer_name)`` callback (default ``True``: we are dialling, so we want the new
connection); ``nok`` and ``not_allowed`` raise :class:`HandshakeRejected`.

Every failure — bad cookie (:class:`WrongCookie`), missing flags, malformed or short packets,
a closed socket, a timeout — raises :class:`HandshakeError` (whose message names the peer),
after closing the writer. Exceptions raised by the callbacks propagate unchanged (the writer
is closed too).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pybroadway._aio import maybe_await
from pybroadway._throttle import Throttle
from pybroadway.erldist.flags import (
    HANDSHAKE_23,
    MANDATORY,
    NAME_ME,
    PUBLISHED,
    expand_mandatory_25,
    flag_names,
    missing_flags,
)
from pybroadway.erldist.handshake_io import HandshakeError as HandshakeError
from pybroadway.erldist.handshake_io import HandshakeRejected as HandshakeRejected
from pybroadway.erldist.handshake_io import Session, close, peername
from pybroadway.erldist.handshake_io import TlsRefused as TlsRefused
from pybroadway.erldist.handshake_io import WrongCookie as WrongCookie
from pybroadway.errors import ArgumentError

__all__ = [
    "STATUSES",
    "CookieSource",
    "HandshakeError",
    "HandshakeRejected",
    "PeerInfo",
    "TlsRefused",
    "WrongCookie",
    "accept",
    "connect",
    "gen_challenge",
    "gen_digest",
]

log = logging.getLogger("pybroadway.erldist.handshake")

#: Statuses ``on_name`` may return.
STATUSES = frozenset({"ok", "ok_simultaneous", "nok", "not_allowed", "alive"})

CookieSource = str | Callable[[str], str]
OnName = Callable[[str, int], "Awaitable[str] | str"]
OnAlive = Callable[[str], "Awaitable[bool] | bool"]

_LOW32 = 0xFFFFFFFF

#: The longest node name accepted: a node name is an atom, and atoms hold 255 characters.
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class PeerInfo:
    """What the handshake learned about the peer.

    ``flags`` are the peer's advertised flags (MANDATORY_25_DIGEST expanded); the
    capabilities in use on the connection are ``flags & our_flags``. ``replaced`` is True when
    the node answered ``alive`` and the peer confirmed: the node must drop its old connection.
    """

    name: str
    flags: int
    creation: int
    replaced: bool = False

    @property
    def hidden(self) -> bool:
        """True if the peer did not advertise PUBLISHED."""
        return not self.flags & PUBLISHED


def gen_challenge() -> int:
    """A random 32-bit challenge."""
    return secrets.randbits(32)


def gen_digest(challenge: int, cookie: str) -> bytes:
    """``md5(cookie ++ integer_to_list(challenge))``, as ``dist_util:gen_digest/2``."""
    return hashlib.md5((cookie + str(challenge)).encode("latin-1")).digest()


def _valid_node_name(name: str) -> bool:
    parts = name.split("@")
    return len(parts) == 2 and all(parts)



def _resolve_cookie(cookie: CookieSource, peer: str) -> str:
    value = cookie(peer) if callable(cookie) else cookie
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ArgumentError("a cookie must consist of latin-1 characters") from None
    return value


def _decode_name(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


# ------------------------------------------------------------------------------- accepting


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, our_name: str,
                 cookie: CookieSource, creation: int, flags: int, on_name: OnName,
                 timeout: float = 10.0, header_size: int = 2) -> PeerInfo:
    """Run the accepting side (B) of the handshake on a freshly accepted connection.

    ``our_name`` is this node's full name (``name@host``), sent in our challenge exactly as the
    peer dialled it. ``cookie`` is the cookie, or a function of the peer's name returning it.
    ``on_name(peer_name, peer_flags)`` returns the status to answer (see the module doc).
    Raises :class:`HandshakeError` (writer closed) on any failure or after ``timeout`` seconds.
    """
    s = Session(reader, writer, f"a node at {peername(writer)}", "from", header_size)
    return await _guarded(s, _accept(s, our_name, cookie, creation, flags, on_name), timeout)


async def _accept(s: Session, our_name: str, cookie: CookieSource, creation: int,
                  our_flags: int, on_name: OnName) -> PeerInfo:
    packet = await s.recv("the peer's name")
    tag = packet[0]
    old = False
    if tag == ord("N"):  # 'N' Flags:64 Creation:32 NameLen:16 Name
        if len(packet) < 15:
            raise s.fail(f"short name packet ({len(packet)} bytes)")
        peer_flags, peer_creation, nlen = struct.unpack_from(">QIH", packet, 1)
        raw = packet[15:15 + nlen]
        if len(raw) != nlen:
            raise s.fail("name packet shorter than its name length")
    elif tag == ord("n"):  # old: 'n' Version:16 Flags:32 Name
        if len(packet) < 7:
            raise s.fail(f"short old-style name packet ({len(packet)} bytes)")
        version, peer_flags = struct.unpack_from(">HI", packet, 1)
        raw = packet[7:]
        peer_creation = 0
        old = True
        if version != 5:
            raise s.fail(f"unsupported distribution version {version}")
    else:
        raise s.fail(f"expected a name packet ('N'), got tag {tag} ({packet[:16]!r})")
    name = _decode_name(raw)
    if len(name) > MAX_NAME_LENGTH:
        # The name would become an atom: refuse it as the BEAM does, before anyone interns it.
        raise s.fail(f"a node name of {len(name)} characters (at most {MAX_NAME_LENGTH}, like "
                     f"an atom) starting {name[:40]!r}")
    peer_flags = expand_mandatory_25(peer_flags)
    dynamic = bool(peer_flags & NAME_ME)
    if dynamic or not _valid_node_name(name):
        raise s.fail(f"invalid node name {name!r}"
                     + (" (dynamic node names are not supported)" if dynamic else ""))
    s.peer = name

    # With the old 'n', the high flag bits only come in the complement: check the low half now.
    required = MANDATORY & _LOW32 if old else MANDATORY
    missing = missing_flags(peer_flags, required)
    if missing:
        s.send(b"snot_allowed")
        await s.drain()
        raise s.fail(f"rejected since it cannot handle {flag_names(missing)}")

    status = await maybe_await(on_name(name, peer_flags))
    if status not in STATUSES:
        raise ValueError(f"on_name returned {status!r}, not one of {sorted(STATUSES)}")
    s.send(b"s" + str(status).encode())
    await s.drain()
    replaced = False
    if status in ("nok", "not_allowed"):
        raise HandshakeRejected(f"handshake from {name} refused: we answered {status}",
                                peer=name, status=str(status))
    if status == "alive":
        reply = await s.recv("the reply to 'alive'")
        if reply == b"strue":
            replaced = True
        elif reply == b"sfalse":
            raise HandshakeRejected(
                f"handshake from {name} abandoned: we have a connection to it and it answered "
                "false to 'alive'", peer=name, status="alive")
        else:
            raise s.fail(f"unexpected reply to 'alive': {reply[:32]!r}")

    our_cookie = _resolve_cookie(cookie, name)
    challenge = gen_challenge()
    raw_ours = our_name.encode("utf-8")
    s.send(struct.pack(">cQIIH", b"N", our_flags, challenge, creation, len(raw_ours))
           + raw_ours)
    await s.drain()

    packet = await s.recv("the challenge reply")
    if old and packet[:1] == b"c":  # 'c' FlagsHigh:32 Creation:32
        if len(packet) != 9:
            raise s.fail(f"malformed complement packet ({len(packet)} bytes)")
        high, peer_creation = struct.unpack_from(">II", packet, 1)
        peer_flags |= high << 32
        missing = missing_flags(peer_flags)
        if missing:
            raise s.fail(f"rejected since it cannot handle {flag_names(missing)}")
        packet = await s.recv("the challenge reply")
    elif old:
        raise s.fail(f"expected the complement ('c') after an old-style name, got "
                     f"{packet[:16]!r}")
    if packet[:1] != b"r" or len(packet) != 21:
        raise s.fail(f"expected the challenge reply ('r', 21 bytes), got {len(packet)} bytes "
                     f"starting {packet[:8]!r}")
    (their_challenge,) = struct.unpack_from(">I", packet, 1)
    if packet[5:] != gen_digest(challenge, our_cookie):
        raise s.fail("wrong cookie: the peer's challenge reply does not match our cookie "
                     f"(the peer {name} uses a different cookie)", WrongCookie)
    s.send(b"a" + gen_digest(their_challenge, our_cookie))
    await s.drain()
    info = PeerInfo(name=name, flags=peer_flags, creation=peer_creation, replaced=replaced)
    log.info("accepted connection from %s (%s, creation %d%s)", name,
             "hidden" if info.hidden else "visible", peer_creation,
             ", replaces the old connection" if replaced else "")
    log.debug("flags of %s: %s", name, flag_names(peer_flags))
    return info


# ------------------------------------------------------------------------------- connecting


async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, our_name: str,
                  cookie: CookieSource, creation: int, flags: int, peer_name: str,
                  timeout: float = 10.0, on_alive: OnAlive | None = None,
                  header_size: int = 2) -> PeerInfo:
    """Run the connecting side (A) of the handshake to ``peer_name`` over an open connection.

    ``our_name`` must be ``name@host``. The name in the peer's challenge must equal
    ``peer_name``. ``on_alive(peer_name)`` answers an ``alive`` status (default True).
    Raises :class:`HandshakeError` (writer closed) on any failure or after ``timeout`` seconds.
    """
    if not _valid_node_name(our_name):
        raise ArgumentError(f"our node name must look like name@host, not {our_name!r}")
    s = Session(reader, writer, peer_name, "to", header_size)
    return await _guarded(
        s, _connect(s, our_name, cookie, creation, flags, peer_name, on_alive), timeout)


async def _guarded(s: Session, steps: Awaitable[PeerInfo], timeout: float) -> PeerInfo:
    """Run one side's steps within ``timeout``; on any failure close the writer and log."""
    try:
        async with asyncio.timeout(timeout):
            return await steps
    except TimeoutError:
        await close(s.writer)
        _warn(s, "handshake %s %s timed out after %ss", s.direction, s.peer, timeout)
        raise s.fail(f"timed out after {timeout}s") from None
    except HandshakeRejected as exc:
        await close(s.writer)
        log.info("%s", exc)
        raise
    except HandshakeError as exc:
        await close(s.writer)
        _warn(s, "%s", exc)
        raise
    except BaseException:
        await close(s.writer)
        raise


# Anyone who can reach the port can fail handshakes at will: those lines are throttled.
_incoming_failures = Throttle(log, logging.WARNING, "failed incoming handshakes")


def _warn(s: Session, message: str, *args: object) -> None:
    if s.direction == "from":
        _incoming_failures.log(message, *args)
    else:
        log.warning(message, *args)


async def _connect(s: Session, our_name: str, cookie: CookieSource, creation: int,
                   our_flags: int, peer_name: str, on_alive: OnAlive | None) -> PeerInfo:
    our_cookie = _resolve_cookie(cookie, peer_name)
    raw_ours = our_name.encode("utf-8")
    s.send(struct.pack(">cQIH", b"N", our_flags | HANDSHAKE_23, creation, len(raw_ours))
           + raw_ours)
    await s.drain()

    packet = await s.recv("the status")
    if packet[:1] != b"s":
        raise s.fail(f"expected a status ('s'), got {packet[:16]!r}")
    status = packet[1:]
    replaced = False
    if status in (b"ok", b"ok_simultaneous"):
        pass
    elif status in (b"nok", b"not_allowed"):
        text = status.decode()
        hint = (" (it lacks flags we need, or it does not allow our node)"
                if text == "not_allowed" else " (it is connecting to us at the same time)")
        raise HandshakeRejected(f"handshake to {peer_name} refused: it answered {text}{hint}",
                                peer=peer_name, status=text)
    elif status == b"alive":
        answer = True if on_alive is None else bool(await maybe_await(on_alive(peer_name)))
        s.send(b"strue" if answer else b"sfalse")
        await s.drain()
        if not answer:
            raise HandshakeRejected(f"handshake to {peer_name} abandoned: it is already "
                                    "connected to us and we answered false to 'alive'",
                                    peer=peer_name, status="alive")
        replaced = True
    elif status.startswith(b"named:"):
        raise s.fail("the peer assigned us a dynamic name, which we never ask for")
    else:
        raise s.fail(f"unknown status {status[:32]!r}")

    packet = await s.recv("the challenge")
    if packet[:1] != b"N" or len(packet) < 19:
        raise s.fail(f"expected a challenge ('N'), got {len(packet)} bytes starting "
                     f"{packet[:8]!r}")
    peer_flags, challenge, peer_creation, nlen = struct.unpack_from(">QIIH", packet, 1)
    raw = packet[19:19 + nlen]
    if len(raw) != nlen:
        raise s.fail("challenge packet shorter than its name length")
    name = _decode_name(raw)
    if name != peer_name:
        raise s.fail(f"the peer calls itself {name!r}, not the {peer_name!r} we dialled")
    peer_flags = expand_mandatory_25(peer_flags)
    missing = missing_flags(peer_flags)
    if missing:
        raise s.fail(f"aborted since it cannot handle {flag_names(missing)}")

    our_challenge = gen_challenge()
    s.send(struct.pack(">cI", b"r", our_challenge) + gen_digest(challenge, our_cookie))
    await s.drain()

    try:
        packet = await s.recv("the challenge ack")
    except HandshakeError:
        raise s.fail("the peer closed the connection after our challenge reply: most likely a "
                     "wrong cookie (the peer uses a different cookie than ours)",
                     WrongCookie) from None
    if packet[:1] != b"a" or len(packet) != 17:
        raise s.fail(f"expected the challenge ack ('a', 17 bytes), got {len(packet)} bytes")
    if packet[1:] != gen_digest(our_challenge, our_cookie):
        raise s.fail(f"wrong cookie: the challenge ack of the peer {peer_name} does not match "
                     "our cookie", WrongCookie)
    info = PeerInfo(name=name, flags=peer_flags, creation=peer_creation, replaced=replaced)
    log.info("connected to %s (%s, creation %d)", name,
             "hidden" if info.hidden else "visible", peer_creation)
    log.debug("flags of %s: %s", name, flag_names(peer_flags))
    return info
