"""Reading a connection's frames into buffers the node owns, after the handshake.

The handshake reads through asyncio streams; then :func:`take_over` hands the transport to a
:class:`FrameReader` (an ``asyncio.BufferedProtocol``), with the bytes the stream had already
read past the handshake. The transport then receives straight into the reader's buffers: a
reusable one, where frames are handled where they lie, all the complete frames of a read in one
pass and in order; and, for a frame longer than that buffer, a buffer of the frame's own size
once its header is known, so that its bytes are never joined or moved. Any transport works
(TCP, or TLS from ``start_tls``): it only has to drive a ``BufferedProtocol``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass

from pybroadway.errors import PyBroadwayError

REUSED_SIZE = 256 * 1024
"""The reusable buffer's size: what one read takes at most, and the largest frame handled in
it (a longer one gets a buffer of its own)."""
MAX_REUSED = 512 * 1024
"""The reusable buffer doubles, up to this size, each time a read of frames of at least
:data:`LARGE_FRAME` bytes, and at most a third of the buffer, fills all the room it was
offered (the socket held more): a busy connection then takes more frames per turn of the
loop, whose cost more messages share. An idle connection, or one of small frames or of
frames too long for it, keeps :data:`REUSED_SIZE`. No larger: what a read brings is copied
out of the buffer at once, best while it is still in a core's cache (512 KiB of L2 on many
server cores). Against 1 MiB, a 64 KiB push ran 0.89-0.97x a BEAM's receiver, not
0.87-0.89x (three runs of ten alternating rounds)."""
LARGE_FRAME = 16 * 1024
MIN_READ = 4096
"""A read is never offered less room than this: the bytes of an incomplete frame move to the
start of the reusable buffer first (never more than one frame's)."""
EAGER_SIZE = 2 * 1024 * 1024
"""A frame's own buffer is allocated at once up to this size; a longer frame's buffer grows,
doubling, as its bytes arrive. A peer announcing a huge frame (up to ``max_frame_size``) makes
the node hold no more than this until it sends the bytes, and twice what it sent after. A
buffer of at most this size is kept for the connection's next long frame: fresh memory costs
a page fault per page touched, which for a stream of 1 MiB frames costs more than the copy."""
ROUND = 64 * 1024  # own buffers are allocated in multiples of this, to fit the next frame too
LATE_LIMIT = 2 * REUSED_SIZE
"""The most a transport may deliver after ``pause_reading`` before the reader gives up on it.
asyncio's deliver nothing then; an SSL transport that delivers the read it had under way
(older asyncio did) delivers at most one read of 256 KiB."""

_u32 = struct.Struct(">I").unpack_from

FrameHandler = Callable[[bytearray, int, int], None]
"""``handler(data, start, stop)``: the frame whose body is ``data[start:stop]``. ``data`` is the
reader's: it may be read until the handler returns (or, while the reader is held, until it is
released), never kept."""
RunTaker = Callable[[bytearray, int, int], int]
"""``handler(data, pos, end)``: takes the complete frames it can, headers included, from
``data[pos:end]``, which starts at a frame's header, and returns where the first it did not
take starts (``pos`` if none). The same rules hold for ``data``."""


class ProtocolError(PyBroadwayError):
    """The peer sent something the distribution protocol does not allow."""


@dataclass(frozen=True)
class Handover:
    """A connection's transport, paused, for a :class:`FrameReader`; the bytes already read
    from it, which come before anything it reads next; what must live as long as the
    transport is used (a StreamWriter closes its transport when it is collected); and, under
    TLS, the TCP transport beneath, whose write buffer the TLS one does not count (asyncio's
    TLS hands it all it has encrypted each time it can write)."""

    transport: asyncio.Transport
    leftover: bytes
    keep: object = None
    beneath: asyncio.WriteTransport | None = None

    def write_buffer_size(self) -> int:
        """Bytes written to the transport that the kernel has not taken yet."""
        size = self.transport.get_write_buffer_size()
        return size if self.beneath is None else size + self.beneath.get_write_buffer_size()


async def take_over(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    beneath: asyncio.WriteTransport | None = None) -> Handover:
    """After a handshake on ``reader``/``writer`` (over TLS on ``beneath``): their transport
    and the bytes the reader holds beyond the handshake (the peer's first frames). Neither
    ``reader`` nor ``writer`` is used again. Raises ConnectionError if the peer is gone."""
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    if transport.is_closing():
        raise ConnectionError("the connection closed right after the handshake")
    reader.feed_eof()  # what it holds is all it gets: read it out without waiting
    leftover = await reader.read()
    transport.pause_reading()  # (reading it out may have resumed it) until a protocol is set
    return Handover(transport, leftover, writer, beneath)


class FrameReader(asyncio.BufferedProtocol):
    """Splits what ``handover.transport`` receives into frames of at most ``max_frame_size``
    bytes and calls ``on_frame`` for each (ticks, empty frames, are only counted in
    :attr:`received`), in order; becomes the transport's protocol at once. The leftover is
    handled first, in the next turn of the loop.

    ``on_run``, if given, is offered the frames first, from each frame on, as many as it will
    take at once: a connection's stream of like frames is then handled in one call, not one
    call each (frames it takes after a hold began are handled all the same: at most one read).

    ``on_error(exc)`` is called, once, when the peer broke the framing (a ProtocolError) or
    a handler raised; ``on_lost()`` when the transport is gone. After either nothing more
    is handled and the buffers are freed.
    """

    def __init__(self, handover: Handover, *, max_frame_size: int, on_frame: FrameHandler,
                 on_error: Callable[[BaseException], None], on_lost: Callable[[], None],
                 on_run: RunTaker | None = None) -> None:
        self._handover = handover
        transport, leftover = handover.transport, handover.leftover
        self._transport = transport
        self._max_frame = max_frame_size
        self._on_frame = on_frame
        self._on_run = on_run
        self._on_error = on_error
        self._on_lost = on_lost
        # The frames handled so far end at _start; bytes up to _end have arrived.
        self._buffer = bytearray(max(REUSED_SIZE, len(leftover)))
        self._buffer[:len(leftover)] = leftover
        self._start = 0
        self._end = len(leftover)
        self._own: bytearray | None = None  # the body of a frame too long for _buffer
        self._spare: bytearray | None = None  # the last one, for the next
        self._own_size = 0                  # that frame's length
        self._filled = 0                    # its bytes received so far
        self._room = 0  # offered to the last read into _buffer (0: it may not grow)
        self._grow = False  # the next read gets a reusable buffer twice as large
        self._last_size = 0  # the size of the last frame a read ended in (or on)
        self._late: bytearray | None = None  # bytes delivered while held, not handled yet
        self._late_read: bytearray | None = None  # the buffer offered for more of them
        self._holds: set[str] = set()
        self._flowing = True  # no hold and not stopped: frames are handled
        self._stopped = False
        self.received = bool(leftover)
        """Whether anything arrived since the owner last cleared this (ticks included)."""
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done once the transport is gone."""
        self.on_writable: Callable[[bool], None] = _ignore
        """Called with False when the transport pauses its writer, with True when it
        resumes it (the transport tells its protocol, which this reader is)."""
        transport.set_protocol(self)
        asyncio.get_running_loop().call_soon(self._handle)
        transport.resume_reading()

    # -- holding back ------------------------------------------------------------------------

    def hold(self, why: str) -> None:
        """Handle no frame and read nothing until :meth:`release` with the same ``why``
        (backpressure, a frame decoded elsewhere); the peer's bytes wait in the socket."""
        if not self._holds:
            self._flowing = False
            if not self._stopped:
                self._transport.pause_reading()
        self._holds.add(why)

    def release(self, why: str) -> None:
        """Undo :meth:`hold` for ``why``; once nothing holds, the frames that arrived
        meanwhile are handled in the next turn of the loop, then reading goes on."""
        if why not in self._holds:
            return
        self._holds.discard(why)
        if not self._holds and not self._stopped:
            self._flowing = True
            asyncio.get_running_loop().call_soon(self._resume)
            self._transport.resume_reading()

    @property
    def held(self) -> bool:
        return bool(self._holds)

    def stop(self) -> None:
        """Handle nothing more and free the buffers (the owner closes the transport)."""
        self._stopped = True
        self._flowing = False
        self._buffer = bytearray()
        self._own = self._spare = self._late = None
        self._start = self._end = 0

    # -- asyncio.BufferedProtocol ------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if not self._flowing:
            # Delivered after pause_reading: never into the buffers, whose frames may be in
            # use while held, and never an empty buffer (TLS would take it for the end).
            self._late_read = bytearray(MIN_READ if sizehint <= 0 else
                                        min(sizehint, REUSED_SIZE))
            return memoryview(self._late_read)
        own = self._own
        if own is not None:
            if self._filled == len(own):  # the frame's bytes reached what was allocated
                own += bytes(min(len(own), self._own_size - len(own)))
            return memoryview(own)[self._filled:self._own_size]
        buffer = self._buffer
        start, end = self._start, self._end
        if self._grow:
            self._grow = False
            self._buffer = bigger = bytearray(2 * len(buffer))
            bigger[:end - start] = memoryview(buffer)[start:end]
            self._start, self._end = 0, end - start
            return self._offer(memoryview(bigger)[end - start:])
        if start == end:
            self._start = self._end = 0
            return self._offer(memoryview(buffer))
        if start and (len(buffer) - end < MIN_READ or (end - start >= 4
                      and start + 4 + _u32(buffer, start)[0] > len(buffer))):
            # Too little room left, or not enough for the frame under way: move what there
            # is of it (less than a frame) to the start.
            view = memoryview(buffer)
            view[:end - start] = view[start:end]
            self._start, self._end = 0, end - start
        return self._offer(memoryview(buffer)[self._end:])

    def _offer(self, room: memoryview) -> memoryview:
        self._room = len(room) if len(self._buffer) < MAX_REUSED else 0
        return room

    def buffer_updated(self, nbytes: int) -> None:
        self.received = True
        late = self._late_read
        if late is not None:
            self._late_read = None
            self._keep_late(late, nbytes)
        elif self._own is not None:
            self._filled += nbytes
        else:
            self._end += nbytes
            full = nbytes == self._room >= len(self._buffer) // 2
            self._handle()
            # Only for large frames: small ones fill a read by the thousand already, and
            # more of them a read would hold the loop longer, each read handled at once. Not
            # for frames over a third of it: a read that ends in a frame too long for
            # the buffer has its part of it copied to the frame's own.
            self._grow = full and LARGE_FRAME <= self._last_size <= len(self._buffer) // 3
            return
        self._handle()

    def pause_writing(self) -> None:
        self.on_writable(False)

    def resume_writing(self) -> None:
        self.on_writable(True)

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        stopped = self._stopped
        self.stop()
        if not self.lost.done():
            self.lost.set_result(None)
        if not stopped:
            self._on_lost()

    # -- bytes delivered while held ---------------------------------------------------------

    def _keep_late(self, read: bytearray, nbytes: int) -> None:
        if self._stopped:
            return
        if self._late is None:
            self._late = bytearray()
        self._late += memoryview(read)[:nbytes]
        if len(self._late) > LATE_LIMIT:
            self.stop()
            self._on_error(ProtocolError(
                f"the transport delivered more than {LATE_LIMIT} bytes while reading was "
                "paused"))

    def _resume(self) -> None:
        """Reading goes on: first the bytes delivered while held, as if they arrived now."""
        late, self._late = self._late, None
        view = memoryview(late or b"")
        while view and self._flowing:
            buffer = self.get_buffer(len(view))
            count = min(len(buffer), len(view))
            buffer[:count] = view[:count]
            buffer.release()  # (an own buffer may grow at the next get_buffer)
            view = view[count:]
            self.buffer_updated(count)  # its frames are handled, and may hold the reader
        if view and not self._stopped:  # held again: the rest comes first next time
            self._late = bytearray(view)
        view.release()
        self._handle()

    # -- splitting ---------------------------------------------------------------------------

    def _handle(self) -> None:
        """Hand over every complete frame while nothing holds the reader."""
        try:
            own = self._own
            if own is not None:
                if self._filled < self._own_size or not self._flowing:
                    return
                self._own = None
                self._on_frame(own, 0, self._own_size)
                if self._flowing and len(own) <= EAGER_SIZE:  # (held: it may be in use)
                    self._spare = own
            buffer = self._buffer
            on_frame = self._on_frame
            on_run = self._on_run
            max_frame = self._max_frame
            pos, end = self._start, self._end
            size = 0
            while self._flowing and end - pos >= 4:
                if on_run is not None:
                    taken = on_run(buffer, pos, end)
                    if taken != pos:
                        self._start = pos = taken
                        size = 0
                        if not self._flowing or end - pos < 4:
                            break
                (size,) = _u32(buffer, pos)
                if size > max_frame:
                    raise ProtocolError(
                        f"a frame of {size} bytes is larger than max_frame_size={max_frame}")
                stop = pos + 4 + size
                if stop > end:
                    if stop - pos > len(buffer):
                        self._own_frame(pos, size)
                    break
                self._start = pos = stop
                if size:
                    on_frame(buffer, stop - size, stop)
            self._last_size = size
        except Exception as exc:
            if not self._stopped:
                self.stop()
                self._on_error(exc)

    def _own_frame(self, pos: int, size: int) -> None:
        """The frame at ``pos`` is longer than the reusable buffer: read the rest of it into a
        buffer of its own, which starts with the part that came already."""
        end = self._end
        own = self._spare
        if own is None or len(own) < min(size, EAGER_SIZE):
            own = bytearray(min(-(-size // ROUND) * ROUND, EAGER_SIZE))
        self._spare = None
        own[:end - pos - 4] = memoryview(self._buffer)[pos + 4:end]
        self._own, self._own_size, self._filled = own, size, end - pos - 4
        self._start = self._end = 0
        if len(self._buffer) > REUSED_SIZE:
            # Frames too long for it now: a read that takes their first bytes into it has
            # them copied to their own buffer, the more the larger it grew.
            self._buffer = bytearray(REUSED_SIZE)


def _ignore(_: bool) -> None:
    pass
