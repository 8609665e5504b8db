"""Handshake messages on the wire: their length headers, the errors a handshake ends with, and
what a failed read means (:mod:`pybroadway.erldist.handshake` runs the steps)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct

from pybroadway.erldist import tls_failures
from pybroadway.errors import ArgumentError, PyBroadwayError

#: The longest handshake message read (what a 2-byte header allows): a 4-byte header cannot
#: make a node that has not checked the cookie yet hold more.
MAX_MESSAGE = 0xFFFF


class HandshakeError(PyBroadwayError):
    """The handshake failed; the message names the peer and says what went wrong."""

    def __init__(self, message: str, *, peer: str | None = None) -> None:
        super().__init__(message)
        self.peer = peer


class HandshakeRejected(HandshakeError):
    """A status ended the handshake: ``nok``, ``not_allowed``, or ``alive`` answered false.

    ``status`` is the status that was sent (accepting side) or received (connecting side).
    """

    def __init__(self, message: str, *, peer: str | None = None, status: str) -> None:
        super().__init__(message, peer=peer)
        self.status = status


class TlsRefused(HandshakeError):
    """TLS ended the connection: a certificate was refused (the peer's by us, or ours by the
    peer), or one side speaks TLS and the other does not."""


class WrongCookie(HandshakeError):
    """The cookies most likely differ: a digest did not match, or the peer closed the
    connection right after our challenge reply (what a node does when ours did not match)."""

class Session:
    """One handshake in progress: framing, errors, and the peer's name for messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: str, direction: str, header_size: int) -> None:
        if header_size not in (2, 4):
            raise ArgumentError(f"a handshake header has 2 or 4 bytes, not {header_size}")
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.direction = direction
        self.header = ">H" if header_size == 2 else ">I"
        self.header_size = header_size

    def fail(self, what: str, kind: type[HandshakeError] = HandshakeError) -> HandshakeError:
        return kind(f"handshake {self.direction} {self.peer} failed: {what}", peer=self.peer)

    def send(self, payload: bytes) -> None:
        self.writer.write(struct.pack(self.header, len(payload)) + payload)

    async def recv(self, expecting: str) -> bytes:
        try:
            header = await self.reader.readexactly(self.header_size)
            if tls_failures.is_tls_record(header) and self.header_size == 2:
                # No handshake message is that long (5 KiB and more): it is TLS, which would
                # otherwise keep us waiting for bytes that never come.
                raise self.fail(f"the peer speaks TLS where we expected {expecting} in plain "
                                "TCP (it uses TLS distribution, this node does not)",
                                TlsRefused)
            (length,) = struct.unpack(self.header, header)
            if length > MAX_MESSAGE:
                raise self.fail(f"a handshake message of {length} bytes announced instead of "
                                f"{expecting} (at most {MAX_MESSAGE})")
            data = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ssl.SSLEOFError) as exc:
            partial = getattr(exc, "partial", b"")  # (TLS: closed without close_notify)
            raise self.fail(f"the peer closed the connection while we waited for {expecting}"
                            + (f" (after {len(partial)} bytes)" if partial else "")
                            ) from None
        except ssl.SSLError as exc:
            # Under TLS 1.3 the server checks our certificate after our side of the TLS
            # handshake is done: its refusal is what our first read gets.
            raise self.fail(tls_failures.describe(exc), TlsRefused) from None
        except OSError as exc:
            raise self.fail(f"socket error while waiting for {expecting}: {exc}") from exc
        if not data:
            raise self.fail(f"empty packet instead of {expecting}")
        return data

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except OSError as exc:
            raise self.fail(f"socket error while sending: {exc}") from exc


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


def peername(writer: asyncio.StreamWriter) -> str:
    addr = writer.get_extra_info("peername")
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)

