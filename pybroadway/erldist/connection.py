"""One distribution connection after the handshake: frames, ticks, coalesced writes.

Every frame is ``Len:32, 112, 131 Control, [131 Message]`` (the pass-through form: we never
negotiate the atom cache or fragments); a length of 0 is a tick. The transport reads into the
buffers of a :class:`~pybroadway.erldist.framing.FrameReader`, which hands every complete
frame of a read, where it lies, to the connection, in order: no task per frame, so order
between two processes is kept by construction. A binary reaches its receiver copied once, out
of the frame into the ``bytes`` the receiver gets; a large one is sent without being copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pybroadway import term as _term
from pybroadway.erldist.flags import PUBLISHED
from pybroadway.erldist.framing import LARGE_FRAME, FrameReader, Handover
from pybroadway.erldist.framing import ProtocolError as ProtocolError  # named from here too
from pybroadway.erldist.output import NO_MESSAGE as NO_MESSAGE  # named from here too
from pybroadway.erldist.output import Output
from pybroadway.term import Atom, DecodeError, Decoder, Encoder, Pid, loggable

log = logging.getLogger("pybroadway.erldist.connection")

PASS_THROUGH = 112
DEFAULT_MAX_FRAME = 128 * 1024 * 1024
DEFAULT_MAX_INFLATED = 1024 * 1024
"""The largest a compressed term in a frame may inflate to. A BEAM never compresses what it
sends over the distribution, and a term builds up to one object per byte it inflates to: the
cap keeps a small frame from costing more than a large one."""
DEFAULT_MAX_PENDING_OUTPUT = 256 * 1024 * 1024
"""The most bytes a connection may hold for a peer that does not read them: past it, the
connection is closed (a BEAM would suspend its senders instead; ours never block)."""
DEFAULT_MAX_TOTAL_PENDING_OUTPUT = 1024 * 1024 * 1024
"""The most bytes a node may hold for all its peers together: past it, the connection that
holds the most is closed, as if it alone had passed its own bound (several peers that read
nothing could otherwise each make the node hold ``max_pending_output``)."""
INFLATE_RATIO = 64
"""A compressed term in a frame may inflate to at most 64 times its size (64 KiB at least):
decoding a frame costs in proportion to the frame."""
OFF_LOOP_SIZE = 256 * 1024
"""Frames larger than this are decoded in a thread of their own, so that a big term does not
hold up the other connections (their ticks included); the connection waits for it, keeping
its order. Not those whose message ends in one binary holding all but :data:`BINARY_HEAD`
bytes of the frame: decoding those is one copy (milliseconds for 64 MiB), cheaper in the loop
than a thread's start and hand-back."""
BINARY_HEAD = 4096

_u32 = struct.Struct(">I").unpack_from
_pack_u32_into = struct.Struct(">I").pack_into

Handler = Callable[["Connection", Any, Any], None]
RunHandler = Callable[["Connection", Any, list[Any]], None]


def _rebuilder(heads: tuple[tuple[Any, ...], ...]) -> Callable[[bytes], Any]:
    """A function making ``heads[0] + (heads[1] + (... + (binary,)),)``."""
    if len(heads) == 1:
        (outer,) = heads
        return lambda binary: (*outer, binary)
    if len(heads) == 2:
        outer, inner = heads
        return lambda binary: (*outer, (*inner, binary))

    def rebuild(binary: bytes) -> Any:
        term: Any = binary
        for head in reversed(heads):
            term = (*head, term)
        return term
    return rebuild


class Connection:
    """A live connection to ``peer`` (an Atom), owned by a node.

    ``handlers[op](connection, control, message)`` is called for every frame, in order, by
    the control message's operation number; an operation without a handler is a protocol
    error that closes the connection. With the compiled codec, frames smaller than
    :data:`~pybroadway.erldist.framing.LARGE_FRAME` that repeat the control of the frame
    before them, such as a process's stream of sends, are decoded a read's worth at a time,
    and their messages go in a list to ``runs[op](connection, control, messages)`` when
    ``runs`` has the operation: what would be one call per message is one per run.
    ``on_closed(connection, reason)`` is called once when the connection ends, whatever ended
    it; ``on_backlog(connection)``, if given, after a write that left bytes the peer has not
    taken yet (the node weighs them against all its peers'). ``flags`` are the capabilities
    both sides advertised. ``handover`` (the transport, and what was read from it already)
    comes from :func:`~pybroadway.erldist.framing.take_over`.
    """

    def __init__(self, peer: Atom, flags: int, handover: Handover, *, encoder: Encoder,
                 handlers: Mapping[int, Handler], runs: Mapping[int, RunHandler],
                 on_closed: Callable[[Connection, str], None], ticktime: float,
                 max_frame_size: int = DEFAULT_MAX_FRAME,
                 max_inflated: int = DEFAULT_MAX_INFLATED,
                 max_pending_output: int = DEFAULT_MAX_PENDING_OUTPUT,
                 on_backlog: Callable[[Connection], None] | None = None) -> None:
        self.peer = peer
        self.flags = flags
        self.max_frame_size = max_frame_size
        self.max_pending_output = max_pending_output
        self.ticktime = ticktime
        self._transport = handover.transport
        self._encoder = encoder
        self._decoder = Decoder(max_inflated=max_inflated, max_inflate_ratio=INFLATE_RATIO)
        self._handlers = handlers
        self._runs = runs
        self._on_closed = on_closed
        self._on_backlog = on_backlog
        self._loop = asyncio.get_running_loop()
        self._paused = False
        self._last_prefix: bytes | None = None  # 112 and the last control's bytes
        self._last_control: Any = None
        self._last_handler: Handler | None = None
        self._last_run: RunHandler | None = None
        self.route: tuple[Any, Any] = (None, None)  # the node's: last SEND control, its process
        self._message_prefix: bytes | None = None
        self._rebuild: Callable[[bytes], Any] | None = None
        # Reading only the new binary of a repeated message shape beats the pure-Python
        # decoder, not the compiled one (bench/term_codec.py, bench/e2e.py).
        self._learn_shapes = _term.IMPLEMENTATION == "python"
        self.closed = False
        self._frames = FrameReader(handover, max_frame_size=max_frame_size,
                                   on_frame=self._on_frame, on_error=self._read_failed,
                                   on_lost=self._lost,
                                   on_run=None if self._learn_shapes else self._on_run)
        self._output = Output(handover, encoder, self._flushed)
        self._frames.on_writable = self._output.writable
        self._tasks = [self._loop.create_task(self._tick_loop(), name=f"dist-tick-{peer.name}")]

    def __repr__(self) -> str:
        return f"<Connection to {self.peer.name}{' closed' if self.closed else ''}>"

    @property
    def hidden(self) -> bool:
        """Whether the connection is hidden (either side did not publish itself): a visible
        node leaves a hidden peer out of ``erlang:nodes()``."""
        return not self.flags & PUBLISHED

    @property
    def tls(self) -> bool:
        """Whether the connection runs over TLS (its transport is an SSL one)."""
        return self._transport.get_extra_info("ssl_object") is not None

    def sender(self, pid: Any) -> Pid | None:
        """The sender a SEND_SENDER or REG_SEND names, if it is a process of this
        connection's node; else None. The BEAM does not check it, but it is content: only the
        connection proves where a message came from."""
        return pid if type(pid) is Pid and pid.node is self.peer else None

    # -- sending ----------------------------------------------------------------------------

    def send(self, control: Any, message: Any = NO_MESSAGE) -> None:
        """Queue one frame; frames queued in the same loop iteration go out in one write
        (a large ``bytes`` in ``message`` as a piece of its own, not copied)."""
        if not self.closed:
            self._output.frame(control, message)

    def _flushed(self, pending: int) -> None:
        if pending > self.max_pending_output:
            log.error("node %s reads nothing of what is sent to it (%d bytes wait); "
                      "closing the connection", self.peer.name, pending)
            self._close(f"{pending} bytes unread by the peer", discard=True)
        elif pending and self._on_backlog is not None:
            self._on_backlog(self)

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued but not yet taken by the kernel (a slow peer makes this grow)."""
        return self._output.pending

    # -- backpressure -----------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading from the peer: its sends back up into its own distribution buffer
        (frames that arrived already wait too)."""
        if not self._paused:
            self._paused = True
            self._frames.hold("paused")

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._frames.release("paused")

    @property
    def reading(self) -> bool:
        return not self._paused

    # -- receiving --------------------------------------------------------------------------

    def _on_frame(self, data: bytearray, start: int, stop: int) -> None:
        if stop - start > OFF_LOOP_SIZE and not _ends_in_one_binary(data, start, stop):
            self._off_loop(data, start, stop)
            return
        handler, control, message = self._frame(data, start, stop)
        handler(self, control, message)

    def _on_run(self, data: bytearray, pos: int, end: int) -> int:
        run, prefix = self._last_run, self._last_prefix
        if run is None or prefix is None:
            return pos
        messages, stop = self._decoder.decode_records(data, pos, end, prefix, LARGE_FRAME - 1)
        if messages:
            run(self, self._last_control, messages)
        return stop

    def _read_failed(self, exc: BaseException) -> None:
        """A frame broke the protocol, did not decode, or its handler raised: the
        connection ends."""
        if isinstance(exc, DecodeError):
            reason = f"undecodable term from {self.peer.name}: {exc}"
            log.error("%s; closing the connection", reason)
        elif isinstance(exc, ProtocolError):
            reason = f"protocol error from {self.peer.name}: {exc}"
            log.error("%s; closing the connection", reason)
        else:
            reason = f"internal error while handling a frame from {self.peer.name}"
            log.error("%s; closing the connection", reason, exc_info=exc)
        self._close(reason)

    def _lost(self) -> None:
        self._close("connection closed by the peer")

    def _frame(self, data: bytearray, start: int, stop: int) -> tuple[Handler, Any, Any]:
        """Decode the frame in ``data[start:stop]``: its handler, control and message."""
        # Control terms repeat (same sender, same target): when the frame starts with the
        # previous control's bytes, reuse its decoded form and handler. A term's encoding is
        # never a prefix of another term's, so this cannot mistake one control for another.
        last = self._last_prefix
        if last is not None and data.startswith(last, start, stop):
            control = self._last_control
            handler = self._last_handler
            pos = start + len(last)
        else:
            if data[start] != PASS_THROUGH:
                raise ProtocolError(
                    f"expected a pass-through frame (112), got type {data[start]}")
            control, end = self._decoder.decode_from(data, start + 1)
            if type(control) is not tuple or not control or type(control[0]) is not int:
                raise ProtocolError(
                    f"control message is not a tuple with an operation: {loggable(control)}")
            handler = self._handlers.get(control[0])
            if handler is None:
                raise ProtocolError(
                    f"unknown control operation {control[0]} in {loggable(control)}")
            self._last_prefix = bytes(memoryview(data)[start:end])
            self._last_control = control
            self._last_handler = handler
            self._last_run = self._runs.get(control[0])
            pos = end
        if pos < stop:
            # A stream of messages that differ only in a trailing binary, such as
            # {'$gen_cast', {push_message, Data}}: when the message starts with the bytes
            # that came before the previous one's binary, only the new binary is read (with
            # the pure-Python codec; the compiled one decodes the whole message faster).
            prefix = self._message_prefix
            at = pos + len(prefix) if prefix is not None else 0
            if prefix is not None and data.startswith(prefix, pos) and at + 4 <= stop \
                    and at + 4 + _u32(data, at)[0] == stop:
                message = self._rebuild(bytes(memoryview(data)[at + 4:stop]))  # type: ignore[misc]
                pos = stop
            else:
                message, end = self._decoder.decode_from(data, pos)
                if self._learn_shapes:
                    self._learn_message(message, data, pos, end)
                pos = end
        else:
            message = NO_MESSAGE
        if pos != stop:
            raise ProtocolError(f"frame holds {stop - start} bytes but its terms {pos - start}")
        return handler, control, message  # type: ignore[return-value]

    def _off_loop(self, data: bytearray, start: int, stop: int) -> None:
        """:meth:`_frame` in a daemon thread (the loop goes on meanwhile; nothing waits for the
        thread at exit), then the handler in the loop. Only this connection's decoder is used
        there, and this connection handles nothing else, and reads nothing into ``data``,
        until the frame is handled."""
        self._frames.hold("decoding")
        loop = self._loop

        def decode() -> None:
            try:
                result = self._frame(data, start, stop)
            except BaseException as exc:  # handed to the loop, which decides
                loop.call_soon_threadsafe(self._decoded, None, exc)
            else:
                loop.call_soon_threadsafe(self._decoded, result, None)

        threading.Thread(target=decode, name=f"dist-decode-{self.peer.name}",
                         daemon=True).start()

    def _decoded(self, result: tuple[Handler, Any, Any] | None,
                 error: BaseException | None) -> None:
        if self.closed:
            return
        try:
            if error is not None:
                raise error
            assert result is not None
            handler, control, message = result
            handler(self, control, message)
        except Exception as exc:
            self._read_failed(exc)
            return
        self._frames.release("decoding")

    def _learn_message(self, message: Any, data: bytearray, start: int, end: int) -> None:
        """Remember the prefix of ``message`` if it is nested tuples whose last leaf is a
        binary, and how to rebuild such a message around another binary."""
        self._message_prefix = None
        heads: list[tuple[Any, ...]] = []
        term = message
        while type(term) is tuple and term and len(heads) < 4:
            heads.append(term[:-1])
            term = term[-1]
        if type(term) is not bytes or not heads:
            return
        tag_at = end - len(term) - 5
        if tag_at <= start or data[tag_at] != 109:  # BINARY_EXT
            return
        self._message_prefix = bytes(data[start:tag_at + 1])
        self._rebuild = _rebuilder(tuple(heads))

    # -- ticks ------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        interval = self.ticktime / 4
        silent = 0
        while True:
            await asyncio.sleep(interval)
            self._output.tick()
            if self._frames.received or self._frames.held:
                # While we hold reading back (backpressure, a frame decoding) the peer's ticks
                # wait unread in the socket: that silence is ours, not the peer's.
                self._frames.received = False
                silent = 0
            else:
                silent += 1
                if silent >= 4:
                    log.warning("node %s not responding for %ss; removing the connection",
                                self.peer.name, self.ticktime)
                    # Dropped at once, with what it left unread, as the BEAM drops a
                    # connection that timed out: a flush would wait for a peer that is gone.
                    self._close("net_tick_timeout", discard=True)
                    return

    # -- closing ----------------------------------------------------------------------------

    def _close(self, reason: str, *, discard: bool = False) -> None:
        if self.closed:
            return
        if discard:
            self._output.discard()
        else:
            self._on_backlog = None  # its last bytes go out (or not) whatever the others hold
            self._output.hand_over()
            if self.closed:  # that flush found the peer reading too little, and closed
                return
        self.closed = True
        self._frames.stop()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        with contextlib.suppress(Exception):
            if discard:
                self._transport.abort()
            else:
                self._transport.close()
        self._on_closed(self, reason)

    def close(self, reason: str = "closed", *, discard: bool = False) -> None:
        """Close the connection: pending writes are flushed first, or with ``discard``
        dropped at once (a peer that reads too little: what it left unread is freed now,
        not kept until it reads)."""
        self._close(reason, discard=discard)

    def abort(self) -> None:
        """Drop the socket now, with whatever is still waiting to be written."""
        self._output.discard()
        with contextlib.suppress(Exception):
            self._transport.abort()

    async def wait_closed(self) -> None:
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._frames.lost


def _ends_in_one_binary(data: bytearray, start: int, stop: int) -> bool:
    """Whether the frame in ``data[start:stop]`` ends with a binary (BINARY_EXT) that starts
    within its first :data:`BINARY_HEAD` bytes. A false match costs only where the frame is
    decoded, never what it decodes to."""
    limit = min(stop - 5, start + BINARY_HEAD)
    at = data.find(109, start, limit)
    while at != -1:
        if _u32(data, at + 1)[0] == stop - at - 5:
            return True
        at = data.find(109, at + 1, limit)
    return False
