"""The distribution handshake against real OTP 25 / 28 nodes, against itself, and against junk."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from pybroadway.erldist import epmd as E
from pybroadway.erldist import flags as F
from pybroadway.erldist.handshake import (
    HandshakeError,
    HandshakeRejected,
    PeerInfo,
    WrongCookie,
    accept,
    connect,
    gen_digest,
)
from testkit.peers import BeamPeer, SystemEpmd, unique_name

HOST = "localhost"
CREATION = 0x1234ABCD

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# ---------------------------------------------------------------- helpers


def _text(peer: BeamPeer, expr: str) -> str:
    """Evaluate ``expr`` on the peer and return its value printed with ~p."""
    return peer.raw(f"list_to_binary(io_lib:format(\"~p\", [{expr}])).").decode()


async def _atext(peer: BeamPeer, expr: str) -> str:
    return await asyncio.to_thread(_text, peer, expr)


@pytest.fixture
async def erl(epmd: SystemEpmd, otp: str) -> AsyncIterator[BeamPeer]:
    """A started erl node of each release, registered with the private epmd."""
    peer = BeamPeer.erlang(otp, epmd_port=epmd.port)
    try:
        await asyncio.to_thread(peer.eval, "ok.")
        yield peer
    finally:
        peer.kill()


@dataclass
class PyAcceptor:
    """A TCP server whose connections run accept(); results land in ``results``."""

    name: str
    cookie: str
    flags: int = F.default_flags()
    status: str = "ok"
    timeout: float = 5.0
    results: asyncio.Queue[PeerInfo | BaseException] = field(default_factory=asyncio.Queue)
    seen: list[tuple[str, int]] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def node(self) -> str:
        return f"{self.name}@{HOST}"

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def on_name(self, name: str, flags: int) -> str:
        self.seen.append((name, flags))
        return self.status

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            info = await accept(reader, writer, our_name=self.node, cookie=self.cookie,
                                creation=CREATION, flags=self.flags, on_name=self.on_name,
                                timeout=self.timeout)
        except Exception as exc:
            self.results.put_nowait(exc)
            return
        self.results.put_nowait(info)
        await _hold_open(reader, writer)

    async def start(self) -> PyAcceptor:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def result(self, timeout: float = 10.0) -> PeerInfo | BaseException:
        return await asyncio.wait_for(self.results.get(), timeout)


async def _hold_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep a finished connection up: read and discard until the peer closes it."""
    try:
        while await reader.read(65536):
            pass
    except OSError:
        pass
    finally:
        writer.close()


async def _serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _packet(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


async def _read_packet(reader: asyncio.StreamReader) -> bytes:
    (length,) = struct.unpack(">H", await reader.readexactly(2))
    return await reader.readexactly(length)


def _name_packet(name: str, flags: int, creation: int = 7) -> bytes:
    raw = name.encode()
    return _packet(struct.pack(">cQIH", b"N", flags, creation, len(raw)) + raw)


# ---------------------------------------------------------------- (a) erl connects to Python


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
async def test_erl_connects_to_python(erl: BeamPeer, epmd: SystemEpmd, hidden: bool) -> None:
    py = await PyAcceptor(unique_name("pyacc"), erl.cookie,
                          flags=F.default_flags(hidden=hidden)).start()
    try:
        async with await E.register(py.name, py.port, hidden=hidden, epmd_port=epmd.port):
            assert await _atext(erl, f"net_kernel:connect_node('{py.node}')") == "true"
            info = await py.result()
            assert isinstance(info, PeerInfo), info
            assert info.name == erl.node
            assert info.creation == int(await _atext(erl, "erlang:system_info(creation)"))
            assert not info.flags & F.missing_flags(F.MANDATORY) and not info.hidden
            assert info.flags & F.DIST_MONITOR and info.flags & F.SPAWN
            assert py.seen == [(erl.node, info.flags)]
            listing = "nodes(hidden)" if hidden else "nodes()"
            assert py.node in await _atext(erl, listing)
    finally:
        await py.close()


# ---------------------------------------------------------------- (b) Python connects to erl


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
async def test_python_connects_to_erl(erl: BeamPeer, epmd: SystemEpmd, hidden: bool) -> None:
    addr = await E.port_please(erl.name, epmd_port=epmd.port)
    assert addr is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", addr.port)
    our = f"{unique_name('pycon')}@{HOST}"
    info = await connect(reader, writer, our_name=our, cookie=erl.cookie, creation=CREATION,
                         flags=F.default_flags(hidden=hidden), peer_name=erl.node, timeout=5)
    holder = asyncio.create_task(_hold_open(reader, writer))
    try:
        assert info.name == erl.node and not info.hidden and not info.replaced
        assert info.creation == int(await _atext(erl, "erlang:system_info(creation)"))
        assert F.missing_flags(info.flags) == 0
        writer.write(b"\0\0\0\0")  # a tick
        listing = "nodes(hidden)" if hidden else "nodes()"
        assert our in await _atext(erl, listing)
        if hidden:
            assert our not in await _atext(erl, "nodes()")
    finally:
        writer.close()
        await holder


# ---------------------------------------------------------------- (c) wrong cookie


async def test_erl_with_wrong_cookie_is_refused(erl: BeamPeer, epmd: SystemEpmd) -> None:
    py = await PyAcceptor(unique_name("pybad"), "not-" + erl.cookie).start()
    try:
        async with await E.register(py.name, py.port, epmd_port=epmd.port):
            assert await _atext(erl, f"net_kernel:connect_node('{py.node}')") == "false"
            err = await py.result()
            assert isinstance(err, HandshakeError)
            assert "wrong cookie" in str(err) and erl.node in str(err)
            assert err.peer == erl.node
            assert py.node not in await _atext(erl, "nodes(connected)")
    finally:
        await py.close()


async def test_python_with_wrong_cookie_is_refused(erl: BeamPeer, epmd: SystemEpmd) -> None:
    addr = await E.port_please(erl.name, epmd_port=epmd.port)
    assert addr is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", addr.port)
    with pytest.raises(HandshakeError, match="cookie") as caught:
        await connect(reader, writer, our_name=f"{unique_name('pybad')}@{HOST}",
                      cookie="not-" + erl.cookie, creation=CREATION, flags=F.default_flags(),
                      peer_name=erl.node, timeout=5)
    assert erl.node in str(caught.value)
    assert writer.is_closing()


async def test_python_dialling_the_wrong_name(erl: BeamPeer, epmd: SystemEpmd) -> None:
    """The name in the challenge must be the one we dialled."""
    addr = await E.port_please(erl.name, epmd_port=epmd.port)
    assert addr is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", addr.port)
    with pytest.raises(HandshakeError, match="calls itself"):
        await connect(reader, writer, our_name=f"{unique_name('py')}@{HOST}",
                      cookie=erl.cookie, creation=CREATION, flags=F.default_flags(),
                      peer_name=f"someoneelse@{HOST}", timeout=5)


async def test_erl_refuses_python_with_too_few_flags(erl: BeamPeer, epmd: SystemEpmd,
                                                     otp: str) -> None:
    """OTP 25 accepts the OTP 25 mandatory set, OTP 28 wants UNLINK_ID and V4_NC too."""
    addr = await E.port_please(erl.name, epmd_port=epmd.port)
    assert addr is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", addr.port)
    kwargs = dict(our_name=f"{unique_name('pyfew')}@{HOST}", cookie=erl.cookie,
                  creation=CREATION, flags=F.MANDATORY_25 | F.PUBLISHED, peer_name=erl.node,
                  timeout=5)
    if otp == "25":
        info = await connect(reader, writer, **kwargs)  # type: ignore[arg-type]
        assert info.name == erl.node
        writer.close()
    else:
        with pytest.raises(HandshakeRejected, match="not_allowed") as caught:
            await connect(reader, writer, **kwargs)  # type: ignore[arg-type]
        assert caught.value.status == "not_allowed"


# ---------------------------------------------------------------- (d) too few flags, by hand


async def test_accept_refuses_a_peer_with_too_few_flags() -> None:
    py = await PyAcceptor("pyflags", "c").start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", py.port)
        writer.write(_name_packet("old@host", F.MANDATORY_25 | F.PUBLISHED))
        assert await _read_packet(reader) == b"snot_allowed"
        assert await reader.read() == b""
        err = await py.result()
        assert isinstance(err, HandshakeError)
        assert "old@host" in str(err) and "UNLINK_ID" in str(err) and "V4_NC" in str(err)
        assert py.seen == []  # the node was not even asked
        writer.close()
    finally:
        await py.close()


@pytest.mark.parametrize("alive", [251, 1000, 60_000])
async def test_accept_refuses_names_longer_than_an_atom(alive: int) -> None:
    """A node name is an atom: over 255 characters the BEAM refuses it (list_to_atom fails),
    and so do we, before the node sees (and could intern) it."""
    py = await PyAcceptor("pylong", "c").start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", py.port)
        writer.write(_name_packet("n" * alive + "@host", F.DEFAULT))
        assert await reader.read() == b""  # closed without a status
        err = await py.result()
        assert isinstance(err, HandshakeError) and "255" in str(err)
        assert py.seen == []
        writer.close()
    finally:
        await py.close()


async def test_connect_aborts_on_a_peer_with_too_few_flags() -> None:
    async def fake_b(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_packet(reader)
        writer.write(_packet(b"sok"))
        raw = b"b@host"
        writer.write(_packet(struct.pack(">cQIIH", b"N", F.MANDATORY_25, 1, 2, len(raw)) + raw))
        await reader.read()
        writer.close()

    server, port = await _serve(fake_b)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(HandshakeError, match=r"b@host.*V4_NC"):
            await connect(reader, writer, our_name="a@host", cookie="c", creation=1,
                          flags=F.DEFAULT, peer_name="b@host", timeout=2)
    finally:
        server.close()


# ---------------------------------------------------------------- (e) garbage, short, timeout

GARBAGE_FOR_ACCEPT = [
    b"",                                            # connect, close
    b"\x00",                                        # half a length
    b"\x00\x10abc",                                 # short packet then close
    b"\x00\x00",                                    # empty packet
    _packet(b"X" * 40),                             # unknown tag
    _packet(b"N\x00\x01"),                          # short 'N'
    _packet(b"N" + b"\xff" * 8 + b"\0\0\0\1" + b"\x00\x50abc"),  # name length too long
    _name_packet("no-at-sign", F.DEFAULT),          # bad node name
    _name_packet("@host", F.DEFAULT),               # empty name part
    _name_packet("a@b@c", F.DEFAULT),               # two '@'
    _packet(b"n\x00\x07" + b"\xff" * 4 + b"a@b"),   # old format, wrong version
    _name_packet("a@host", F.DEFAULT) + _packet(b"r\0\0\0\1" + b"x" * 16),  # wrong digest
    _name_packet("a@host", F.DEFAULT) + _packet(b"rshort"),
    _name_packet("a@host", F.DEFAULT) + b"\xff\xff" + b"z" * 100,  # truncated big packet
    bytes(range(256)) * 4,
]


@pytest.mark.parametrize("junk", GARBAGE_FOR_ACCEPT)
async def test_accept_handles_garbage(junk: bytes) -> None:
    py = await PyAcceptor("pyjunk", "cookie", timeout=2).start()
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", py.port)
        writer.write(junk)
        await writer.drain()
        writer.write_eof()
        err = await py.result(timeout=3)
        # a HandshakeError, nothing else; a challenge reply with a wrong digest says WrongCookie
        assert type(err) is (WrongCookie if b"xxxx" in junk else HandshakeError), repr(err)
        writer.close()
    finally:
        await py.close()


async def test_accept_times_out() -> None:
    py = await PyAcceptor("pyslow", "cookie", timeout=0.3).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", py.port)
        writer.write(b"\x00")  # a byte, then silence
        err = await py.result(timeout=3)
        assert isinstance(err, HandshakeError) and "timed out" in str(err)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # we closed it
        writer.close()
    finally:
        await py.close()


def _fake_peer(script: list[bytes], *, wait_after: bool = True) -> Handler:
    async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await _read_packet(reader)
            for chunk in script:
                writer.write(chunk)
            if wait_after:
                await reader.read()
        writer.close()
    return fake


def _challenge(name: str, flags: int = F.DEFAULT, challenge: int = 5) -> bytes:
    raw = name.encode()
    return _packet(struct.pack(">cQIIH", b"N", flags, challenge, 9, len(raw)) + raw)


GARBAGE_FOR_CONNECT = [
    [],                                             # closes after our name
    [b"\x00"],
    [_packet(b"")],
    [_packet(b"xyz")],                              # not a status
    [_packet(b"swhatever")],                        # unknown status
    [_packet(b"snamed:\x00\x01a\x00\x00\x00\x01")], # dynamic name we never asked for
    [_packet(b"sok"), _packet(b"N\x00")],           # short challenge
    [_packet(b"sok"), _challenge("b@host")[:-3]],   # truncated challenge
    [_packet(b"sok"), _packet(struct.pack(">cQIIH", b"N", F.DEFAULT, 1, 1, 90) + b"b@host")],
    [_packet(b"sok"), _challenge("b@host"), _packet(b"a" + b"\0" * 16)],  # wrong ack
    [_packet(b"sok"), _challenge("b@host"), _packet(b"a")],               # short ack
    [_packet(b"sok"), _challenge("b@host")],        # silence after our reply: timeout
]


@pytest.mark.parametrize("script", GARBAGE_FOR_CONNECT)
async def test_connect_handles_garbage(script: list[bytes]) -> None:
    server, port = await _serve(_fake_peer(script))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(HandshakeError) as caught:
            await asyncio.wait_for(
                connect(reader, writer, our_name="a@host", cookie="c", creation=1,
                        flags=F.DEFAULT, peer_name="b@host", timeout=0.5), 3)
        assert "b@host" in str(caught.value)
        assert type(caught.value) in (HandshakeError, HandshakeRejected, WrongCookie)
    finally:
        server.close()


# ---------------------------------------------------------------- Python to Python


async def _py_pair(status: str = "ok", *, accept_cookie: str = "c", connect_cookie: str = "c",
                   on_alive: Callable[[str], bool] | None = None
                   ) -> tuple[PeerInfo | BaseException, PeerInfo | BaseException]:
    py = await PyAcceptor("b", accept_cookie, status=status, timeout=3).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", py.port)
        try:
            got: PeerInfo | BaseException = await connect(
                reader, writer, our_name="a@host", cookie=connect_cookie, creation=77,
                flags=F.default_flags(hidden=True), peer_name="b@localhost", timeout=3,
                on_alive=on_alive)
        except HandshakeError as exc:
            got = exc
        accepted = await py.result()
        writer.close()
        return accepted, got
    finally:
        await py.close()


async def test_python_to_python() -> None:
    accepted, connected = await _py_pair()
    assert isinstance(accepted, PeerInfo) and isinstance(connected, PeerInfo)
    assert accepted == PeerInfo("a@host", F.default_flags(hidden=True), 77)
    assert accepted.hidden
    assert connected == PeerInfo("b@localhost", F.default_flags(), CREATION)


async def test_python_to_python_wrong_cookie() -> None:
    accepted, connected = await _py_pair(accept_cookie="x", connect_cookie="y")
    assert isinstance(accepted, WrongCookie) and "wrong cookie" in str(accepted)
    assert "a@host" in str(accepted)
    # the acceptor closes after our challenge reply: we tell the likely cause
    assert isinstance(connected, WrongCookie) and "cookie" in str(connected)


@pytest.mark.parametrize("status", ["nok", "not_allowed"])
async def test_refusing_statuses(status: str) -> None:
    accepted, connected = await _py_pair(status)
    assert isinstance(accepted, HandshakeRejected) and accepted.status == status
    assert isinstance(connected, HandshakeRejected) and connected.status == status


async def test_alive_confirmed_replaces() -> None:
    accepted, connected = await _py_pair("alive")
    assert isinstance(accepted, PeerInfo) and accepted.replaced
    assert isinstance(connected, PeerInfo) and connected.replaced


async def test_alive_declined() -> None:
    accepted, connected = await _py_pair("alive", on_alive=lambda _name: False)
    assert isinstance(accepted, HandshakeRejected) and accepted.status == "alive"
    assert isinstance(connected, HandshakeRejected)


async def test_ok_simultaneous_continues() -> None:
    accepted, connected = await _py_pair("ok_simultaneous")
    assert isinstance(accepted, PeerInfo) and isinstance(connected, PeerInfo)


async def test_accept_old_n_with_complement() -> None:
    """The old 'n' (v5) name, completed by a 'c' with the high flags and the creation."""
    py = await PyAcceptor("b", "c").start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", py.port)
        flags = F.DEFAULT | F.PUBLISHED
        writer.write(_packet(struct.pack(">cHI", b"n", 5, flags & 0xFFFFFFFF) + b"old@host"))
        assert await _read_packet(reader) == b"sok"
        challenge = await _read_packet(reader)
        assert challenge[:1] == b"N"
        (their_challenge,) = struct.unpack_from(">I", challenge, 9)
        assert challenge[19:] == b"b@localhost"
        writer.write(_packet(struct.pack(">cII", b"c", flags >> 32, 4242)))
        writer.write(_packet(struct.pack(">cI", b"r", 99) + gen_digest(their_challenge, "c")))
        ack = await _read_packet(reader)
        assert ack == b"a" + gen_digest(99, "c")
        info = await py.result()
        assert info == PeerInfo("old@host", flags, 4242)
        writer.close()
    finally:
        await py.close()


async def test_accept_old_n_without_high_flags_in_complement() -> None:
    py = await PyAcceptor("b", "c").start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", py.port)
        writer.write(_packet(struct.pack(">cHI", b"n", 5, F.DEFAULT & 0xFFFFFFFF) + b"o@h"))
        assert await _read_packet(reader) == b"sok"
        await _read_packet(reader)
        writer.write(_packet(struct.pack(">cII", b"c", 0, 1)))
        err = await py.result()
        assert isinstance(err, HandshakeError) and "V4_NC" in str(err)
        writer.close()
    finally:
        await py.close()


async def test_async_on_name_and_cookie_function() -> None:
    calls: list[str] = []

    async def on_name(name: str, flags: int) -> str:
        await asyncio.sleep(0)
        return "ok"

    def cookie_for(name: str) -> str:
        calls.append(name)
        return "per-peer"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = await accept(reader, writer, our_name="b@h", cookie=cookie_for, creation=1,
                            flags=F.DEFAULT, on_name=on_name, timeout=3)
        assert info.name == "a@h"
        writer.close()

    server, port = await _serve(handle)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        info = await connect(reader, writer, our_name="a@h", cookie="per-peer", creation=2,
                             flags=F.DEFAULT, peer_name="b@h", timeout=3)
        assert info.name == "b@h" and calls == ["a@h"]
        writer.close()
    finally:
        server.close()


async def test_connect_requires_full_our_name() -> None:
    with pytest.raises(ValueError, match="name@host"):
        await connect(asyncio.StreamReader(), None, our_name="nohost",  # type: ignore[arg-type]
                      cookie="c", creation=1, flags=F.DEFAULT, peer_name="b@h", timeout=1)


# ---------------------------------------------------------------- flags and digest


def test_flags() -> None:
    assert F.MANDATORY == 0x403070F94 and F.MANDATORY_25 == 0x1070F94
    assert F.DEFAULT & F.MANDATORY == F.MANDATORY
    assert not F.DEFAULT & (F.PUBLISHED | F.DIST_HDR_ATOM_CACHE | F.FRAGMENTS | F.ALTACT_SIG
                            | F.NAME_ME | F.LOCAL_EXT)
    assert F.default_flags() == F.DEFAULT | F.PUBLISHED
    assert F.default_flags(hidden=True) == F.DEFAULT
    assert F.DFlag.V4_NC == F.V4_NC == 4 << 32
    assert F.flag_names(F.PUBLISHED | F.V4_NC) == ["PUBLISHED", "V4_NC"]
    assert F.flag_names(1 << 40) == [hex(1 << 40)]
    assert F.flag_names(0) == []
    assert F.missing_flags(F.MANDATORY_25_DIGEST | F.UNLINK_ID | F.V4_NC) == 0
    assert F.flag_names(F.missing_flags(F.MANDATORY_25)) == ["UNLINK_ID", "V4_NC"]


def test_digest_matches_erlang() -> None:
    # erlang:md5("cookie" ++ integer_to_list(4294967295)) computed on OTP 25
    import hashlib
    assert gen_digest(4294967295, "cookie") == hashlib.md5(b"cookie4294967295").digest()
    assert gen_digest(0, "x") == hashlib.md5(b"x0").digest()


async def test_erl_reaches_python_through_embedded_epmd(otp: str) -> None:
    """All of it together: embedded epmd, our registration, erl dialling us, accept()."""
    async with E.EmbeddedEpmd() as srv:
        peer = BeamPeer.erlang(otp, epmd_port=srv.port)
        try:
            await asyncio.to_thread(peer.eval, "ok.")
            py = await PyAcceptor(unique_name("pyemb"), peer.cookie).start()
            try:
                async with await E.register(py.name, py.port, epmd_port=srv.port):
                    assert await _atext(peer, f"net_kernel:connect_node('{py.node}')") == "true"
                    info = await py.result()
                    assert isinstance(info, PeerInfo) and info.name == peer.node
                    assert py.node in await _atext(peer, "nodes()")
            finally:
                await py.close()
        finally:
            peer.kill()
