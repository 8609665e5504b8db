"""What a connection sends: frames coalesced per loop iteration, large binaries never copied.

The frames queued in one iteration of the loop are encoded into one buffer, except a large
``bytes`` binary (see :meth:`~pybroadway.term.Encoder.encode_into`), which stays out of it as
a piece of its own. The pieces go to the transport only while the transport holds nothing of
its own: what the socket takes at once is sent from the pieces themselves, and what it does
not take of the last piece (at most :data:`PIECE` bytes) is all the transport copies. Handing
a transport more while it is backed up would copy every byte once more (asyncio's selector
transport appends what waits to one ``bytearray``), and move it again as it grows.

Over plain TCP, pieces go to the socket several at a time in one ``writev`` (asyncio 3.11's
transport has no gather write: a frame's header and its binary would be two ``send`` calls,
each through the transport's Python code); TLS goes through its transport.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from pybroadway.erldist.framing import Handover
from pybroadway.term import Encoder

NO_MESSAGE: Any = object()
"""Stands for the absent second term of a frame whose control message carries none."""

TICK = b"\0\0\0\0"
PIECE = 256 * 1024
"""The most handed to the transport in one write: what the socket does not take of a write
is copied by the transport, so this bounds the copy while the peer is slow."""

GATHER_PIECES = 512
"""The most pieces given to one ``writev`` (Linux takes at most 1024)."""
GATHER_BYTES = 4 * 1024 * 1024
"""The most bytes given to one ``writev``: one call does not hold the loop for longer."""

_pack_u32_into = struct.Struct(">I").pack_into


def _socket_fd(transport: asyncio.WriteTransport) -> int:
    """The descriptor of a plain TCP transport's socket, to write pieces to it at once; -1
    for TLS (or a platform without ``writev``)."""
    if not hasattr(os, "writev") or transport.get_extra_info("ssl_object") is not None:
        return -1
    sock = transport.get_extra_info("socket")
    return -1 if sock is None else int(sock.fileno())


class Output:
    """The frames a connection sends over ``handover.transport``, encoded with ``encoder``.
    ``flushed(pending)`` is called after each flush with the bytes not yet taken by the
    kernel. The transport's protocol must call :meth:`writable` when the transport pauses
    and resumes its writer (``pause_writing``/``resume_writing``)."""

    def __init__(self, handover: Handover, encoder: Encoder,
                 flushed: Callable[[int], None]) -> None:
        self._transport = transport = handover.transport
        self._in_transport = handover.write_buffer_size
        self._encoder = encoder
        self._flushed = flushed
        self._loop = asyncio.get_running_loop()
        self._out = bytearray()
        # The large binaries of the frames in _out, left out of it: (where each goes, it).
        self._apart: list[tuple[int, bytes]] = []
        self._apart_size = 0
        self._pieces: deque[memoryview] = deque()  # flushed, not yet given to the transport
        self._pieces_size = 0
        self._flush_scheduled = False
        self._wrote = False
        self._writable = transport.get_write_buffer_size() == 0
        self._fd = _socket_fd(transport)
        # Paused as soon as anything waits in the transport, resumed once nothing does (a
        # high mark of 0 would pause asyncio's TLS transport when nothing waits, for good).
        transport.set_write_buffer_limits(high=1, low=0)

    def frame(self, control: Any, message: Any = NO_MESSAGE) -> None:
        """Queue one frame; it goes out with the others of this loop iteration."""
        out = self._out
        start = len(out)
        apart = self._apart
        held = len(apart)
        out += b"\0\0\0\0\x70"
        try:
            self._encoder.encode_into(out, control)
            if message is not NO_MESSAGE:
                self._encoder.encode_into(out, message, apart)
        except BaseException:
            del out[start:]
            del apart[held:]
            raise
        size = len(out) - start - 4
        if len(apart) != held:
            left_out = sum(len(binary) for _, binary in apart[held:])
            self._apart_size += left_out
            size += left_out
        _pack_u32_into(out, start, size)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand what was queued to the transport (as much as it takes without copying)."""
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        pieces = self._pieces
        view = memoryview(out)
        at = 0
        for position, binary in self._apart:
            if position > at:
                pieces.append(view[at:position])
            pieces.append(memoryview(binary))
            at = position
        if at < len(out):
            pieces.append(view[at:])
        self._pieces_size += len(out) + self._apart_size
        self._out = bytearray()
        self._apart = []
        self._apart_size = 0
        self._wrote = True
        self._write()
        self._flushed(self.pending)

    def _write(self) -> None:
        pieces = self._pieces
        write = self._transport.write
        if self._fd >= 0 and len(pieces) > 1 and self._writable:
            self._gather()
        while pieces and self._writable:
            piece = pieces.popleft()
            if len(piece) > PIECE:
                pieces.appendleft(piece[PIECE:])
                piece = piece[:PIECE]
            self._pieces_size -= len(piece)
            write(piece)  # may pause the writer (self.writable(False)) before it returns

    def _gather(self) -> None:
        """Write pieces straight to the socket, many per call, while it takes them all; what
        it leaves stays in the pieces, for the transport (which then waits for the socket,
        and reports a failed one as it does any failure of its own writes)."""
        pieces = self._pieces
        while len(pieces) > 1 and not self._transport.is_closing():
            batch: list[memoryview] = []
            size = 0
            for piece in pieces:
                batch.append(piece)
                size += len(piece)
                if len(batch) == GATHER_PIECES or size >= GATHER_BYTES:
                    break
            try:
                written = os.writev(self._fd, batch)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._fd = -1  # the transport's own write meets it and ends the connection
                return
            self._pieces_size -= written
            self._wrote = True
            left = written
            while left and left >= len(pieces[0]):
                left -= len(pieces.popleft())
            if left:
                pieces[0] = pieces[0][left:]
            if written < size:
                return  # the socket is full

    def writable(self, yes: bool) -> None:
        """The transport paused (``False``) or resumed (``True``) its writer."""
        self._writable = yes
        if yes and self._pieces:
            self._write()

    def tick(self) -> None:
        """Send a tick unless something was written since the last call."""
        if not self._wrote and not self._out and not self._pieces:
            self._transport.write(TICK)
        self._wrote = False

    @property
    def pending(self) -> int:
        """Bytes queued or written but not yet taken by the kernel."""
        return (len(self._out) + self._apart_size + self._pieces_size
                + self._in_transport())

    def hand_over(self) -> None:
        """Give everything still queued to the transport, to go out as it closes."""
        self.flush()
        self._writable = True
        self._write()

    def discard(self) -> None:
        """Drop everything not yet given to the transport."""
        self._out = bytearray()
        self._apart = []
        self._apart_size = 0
        self._pieces.clear()
        self._pieces_size = 0
