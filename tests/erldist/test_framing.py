"""The frame reader: frames split anywhere arrive whole and in order; a frame longer than the
reusable buffer gets a buffer of its own; a frame only announced costs (almost) nothing; what
a peer that left had sent is freed.

The reader runs on a real transport (one end of a socket pair, idle); the test plays the
transport's part of the BufferedProtocol contract itself, so that it decides where each read
ends: ``get_buffer``, bytes copied in, ``buffer_updated``.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import pytest

from pybroadway.erldist.framing import (
    EAGER_SIZE,
    LARGE_FRAME,
    LATE_LIMIT,
    MAX_REUSED,
    REUSED_SIZE,
    FrameReader,
    Handover,
    ProtocolError,
)

pytestmark = pytest.mark.timeout(60)

MAX_FRAME = 128 * 1024 * 1024


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def body(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Reading:
    """A FrameReader and what it handed over."""

    reader: FrameReader
    frames: list[bytes] = field(default_factory=list)
    in_runs: int = 0  # of the frames, those a run taker took
    errors: list[BaseException] = field(default_factory=list)
    lost: int = 0

    def feed(self, data: bytes, reads: Iterable[int] = ()) -> None:
        """Deliver ``data`` as the transport would, each read at most the next of ``reads``
        bytes (then as much as the reader offers)."""
        sizes = iter(reads)
        view = memoryview(data)
        while view:
            buffer = self.reader.get_buffer(-1)
            count = min(len(buffer), len(view), next(sizes, len(view)))
            buffer[:count] = view[:count]
            buffer.release()
            view = view[count:]
            self.reader.buffer_updated(count)


@pytest.fixture
async def reading() -> AsyncIterator[Reading]:
    async for made in _readings():
        yield made


def take_runs(made: Reading, data: bytearray, pos: int, end: int) -> int:
    """A run taker: the whole frames from ``pos`` on whose body starts with R (and ticks)."""
    while end - pos >= 4:
        (size,) = struct.unpack_from(">I", data, pos)
        if size and (pos + 4 + size > end or data[pos + 4] != ord("R")):
            break
        if size:
            made.frames.append(bytes(data[pos + 4:pos + 4 + size]))
            made.in_runs += 1
        pos += 4 + size
    return pos


async def _readings(leftover: bytes = b"", max_frame: int = MAX_FRAME,
                    runs: Callable[[Reading, bytearray, int, int], int] | None = None
                    ) -> AsyncIterator[Reading]:
    ours, theirs = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
        asyncio.Protocol, ours)
    made: Reading

    def on_lost() -> None:
        made.lost += 1

    handover = Handover(transport, leftover)  # type: ignore[arg-type]
    reader = FrameReader(handover, max_frame_size=max_frame,
                         on_frame=lambda data, start, stop: made.frames.append(
                             bytes(data[start:stop])),
                         on_error=lambda exc: made.errors.append(exc), on_lost=on_lost,
                         on_run=None if runs is None else (
                             lambda data, pos, end: runs(made, data, pos, end)))
    made = Reading(reader)
    try:
        yield made
    finally:
        transport.close()
        theirs.close()


BIG = REUSED_SIZE + 1000
BODIES = [b"", b"\x70a", body(300, 1), body(5, 2), body(BIG, 3), body(70, 4), b"z"]
STREAM = b"".join(frame(b) if b else b"\0\0\0\0" for b in BODIES)
EXPECTED = [b for b in BODIES if b]


def offsets() -> list[int]:
    """Every offset where a read boundary changes the reader's path, and a sample between."""
    big_at = STREAM.index(frame(BODIES[4])[:8])
    edges = [0, big_at, big_at + REUSED_SIZE, big_at + 4 + BIG, len(STREAM)]
    near = {at + d for at in edges for d in range(-300, 300)}
    return sorted({at for at in near if 0 < at < len(STREAM)} | set(range(1, len(STREAM), 997)))


async def test_frames_split_at_every_offset_arrive_whole_and_in_order() -> None:
    for at in offsets():
        async for made in _readings():
            made.feed(STREAM[:at])
            made.feed(STREAM[at:])
            assert made.frames == EXPECTED, f"split at {at}"
            assert not made.errors


RUN_BODIES = [b"R1", b"R2", b"\x70a", b"R" + body(300, 5), b"", b"R", b"R" + body(BIG, 6),
              b"R" * 70, b"z", b"R3"]
RUN_STREAM = b"".join(frame(b) if b else b"\0\0\0\0" for b in RUN_BODIES)


async def test_runs_taken_at_every_offset_keep_the_frames_whole_and_in_order() -> None:
    """The run taker is offered every frame first; what it leaves goes to on_frame."""
    edges = {*range(1, 400), *range(len(RUN_STREAM) - 400, len(RUN_STREAM))}
    for at in sorted(edges | set(range(1, len(RUN_STREAM), 997))):
        async for made in _readings(runs=take_runs):
            made.feed(RUN_STREAM[:at])
            made.feed(RUN_STREAM[at:])
            assert made.frames == [b for b in RUN_BODIES if b], f"split at {at}"
            assert made.in_runs >= 1 and not made.errors


async def test_a_run_taker_that_holds_the_reader_stops_the_frames_after_it() -> None:
    def take_one_and_hold(made: Reading, data: bytearray, pos: int, end: int) -> int:
        if data[pos + 4] != ord("R"):
            return pos
        made.reader.hold("busy")
        return take_runs(made, data, pos, pos + 4 + struct.unpack_from(">I", data, pos)[0])

    async for made in _readings(runs=take_one_and_hold):
        made.feed(frame(b"R1") + frame(b"x") + frame(b"y"))
        assert made.frames == [b"R1"]
        made.reader.release("busy")
        await asyncio.sleep(0)
        assert made.frames == [b"R1", b"x", b"y"]


async def test_a_run_taker_that_raises_ends_the_reading() -> None:
    def broken(made: Reading, data: bytearray, pos: int, end: int) -> int:
        raise RuntimeError("the run handler failed")

    async for made in _readings(runs=broken):
        made.feed(frame(b"R1") + frame(b"x"))
        assert made.frames == []
        assert [str(e) for e in made.errors] == ["the run handler failed"]
        made.feed(frame(b"y"))
        assert made.frames == [] and len(made.errors) == 1


async def test_several_frames_per_read_and_reads_of_every_size(reading: Reading) -> None:
    rng = random.Random(7)
    # Long frames of sizes up and down: each takes the last one's buffer when it fits.
    sizes = [1, 40, 3000, 100_000, 200_000, REUSED_SIZE - 4, 300_000, 1 << 20, 700_000,
             EAGER_SIZE - 10, EAGER_SIZE + 10, 3 << 20]
    bodies = [body(rng.choice(sizes), i) for i in range(80)]
    reads = [rng.choice([1, 3, 4, 5, 100, 4096, 65536, 1 << 20]) for _ in range(100_000)]
    reading.feed(b"".join(map(frame, bodies)), reads)
    assert reading.frames == bodies
    assert not reading.errors


async def test_a_large_frame_arrives_a_byte_at_a_time(reading: Reading) -> None:
    big = body(REUSED_SIZE + 10, 9)
    reading.feed(frame(big) + frame(b"after"), [1] * (len(big) + 13))
    assert reading.frames == [big, b"after"]


async def test_bytes_read_past_the_handshake_come_first() -> None:
    async for made in _readings(leftover=frame(b"first") + frame(b"second")):
        await asyncio.sleep(0)  # the leftover is handled in the next turn
        assert made.frames == [b"first", b"second"]
    async for made in _readings(leftover=frame(b"first") + frame(b"second")):
        made.feed(frame(b"third"))  # a read before that turn comes after them
        assert made.frames == [b"first", b"second", b"third"]


async def test_frames_wait_while_the_reader_is_held(reading: Reading) -> None:
    reading.reader.hold("paused")
    reading.feed(frame(b"one") + frame(b"two"))
    assert reading.frames == []
    reading.reader.release("paused")
    await asyncio.sleep(0)
    assert reading.frames == [b"one", b"two"]


async def test_bytes_delivered_while_held_wait_apart_and_come_in_order(
        reading: Reading) -> None:
    """A transport may deliver after pause_reading (an SSL transport, the read it had under
    way): those bytes never go where a held frame lies, never meet an empty buffer (which TLS
    takes for the end of the stream), and come after the held frames once released."""
    held: list[tuple[bytearray, int, int, bytes]] = []

    def on_frame(data: bytearray, start: int, stop: int) -> None:
        if not held and data[start:stop].startswith(b"hold"):
            held.append((data, start, stop, bytes(data[start:stop])))
            reading.reader.hold("decoding")  # as a frame decoded in a thread holds it
        reading.frames.append(bytes(data[start:stop]))

    reading.reader._on_frame = on_frame
    small = [b"hold" + body(100, 1), *(body(i % 200 + 1, i) for i in range(4000))]
    large = [b"hold" + body(100, 2), body(BIG, 3), body(10, 4)]
    for bodies in (small, large):
        reading.frames.clear()
        held.clear()
        stream = b"".join(map(frame, bodies))
        # Fill the reusable buffer to the brim: what comes after it is delivered late.
        reading.feed(stream, [len(stream)])
        assert reading.frames == bodies[:1] and reading.reader._late is not None
        data, start, stop, copy = held[0]
        assert bytes(data[start:stop]) == copy  # the held frame is left as it was
        reading.reader.release("decoding")
        await asyncio.sleep(0)
        assert reading.frames == bodies
        assert reading.reader._late is None and not reading.errors


async def test_a_transport_delivering_on_while_paused_is_given_up(reading: Reading) -> None:
    reading.reader.hold("paused")
    reading.feed(b"\0" * LATE_LIMIT)
    assert not reading.errors
    reading.feed(b"\0")
    assert len(reading.errors) == 1 and "while reading was paused" in str(reading.errors[0])
    assert reading.reader._late is None  # freed


async def test_a_frame_over_max_frame_size_ends_it_on_its_header() -> None:
    async for made in _readings(max_frame=1000):
        made.feed(struct.pack(">I", 1001))
        assert len(made.errors) == 1 and isinstance(made.errors[0], ProtocolError)
        assert "max_frame_size=1000" in str(made.errors[0])


async def test_an_announced_frame_costs_nothing_until_its_bytes_arrive(
        reading: Reading) -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        reading.feed(struct.pack(">I", 100 << 20) + b"\x70" + bytes(REUSED_SIZE))
        announced = tracemalloc.get_traced_memory()[0] - before
        assert announced < EAGER_SIZE + (1 << 20), announced
        reading.feed(bytes(8 << 20), [1 << 20] * 8)
        arrived = tracemalloc.get_traced_memory()[0] - before
        assert arrived < 2 * (9 << 20) + EAGER_SIZE, arrived
        # The peer leaves mid-frame: what it had sent is freed.
        reading.reader.connection_lost(None)
        assert reading.lost == 1
        assert tracemalloc.get_traced_memory()[0] - before < 1 << 20
        assert reading.frames == []
    finally:
        tracemalloc.stop()


async def test_the_reusable_buffer_doubles_while_reads_of_large_frames_fill_it_to_a_bound(
        reading: Reading) -> None:
    reader = reading.reader

    def feed_full(bodies: list[bytes]) -> set[int]:
        """Deliver ``bodies``' frames, each read taking all the room it is offered: the
        sizes the reusable buffer had."""
        sizes = set()
        view = memoryview(b"".join(map(frame, bodies)))
        while view:
            room = reader.get_buffer(-1)
            sizes.add(len(reader._buffer))
            count = min(len(room), len(view))
            room[:count] = view[:count]
            room.release()
            view = view[count:]
            reader.buffer_updated(count)
        return sizes

    # Reads a little short of the room offered: the socket held no more, nothing grows.
    bodies = [body(30_000, i) for i in range(100)]
    reading.feed(b"".join(map(frame, bodies)), [REUSED_SIZE // 2 - 1] * 10_000)
    assert reading.frames == bodies and len(reader._buffer) == REUSED_SIZE
    # Full reads of small frames: thousands a read already, the buffer stays as it is.
    reading.frames.clear()
    bodies = [body(i % 500 + 1, i) for i in range(4000)]
    assert feed_full(bodies) == {REUSED_SIZE}
    assert reading.frames == bodies
    # Full reads of frames too long for three to fit: the buffer stays as it is.
    reading.frames.clear()
    bodies = [body(REUSED_SIZE // 3 + 100 + i, i) for i in range(40)]
    assert feed_full(bodies) == {REUSED_SIZE}
    assert reading.frames == bodies
    # Full reads of large frames: the buffer doubles, up to MAX_REUSED.
    reading.frames.clear()
    bodies = [body(LARGE_FRAME + i * 7, i) for i in range(400)]
    doublings = (MAX_REUSED // REUSED_SIZE).bit_length() - 1
    assert doublings >= 1 and REUSED_SIZE << doublings == MAX_REUSED
    assert sorted(feed_full(bodies)) == [REUSED_SIZE << i for i in range(doublings + 1)]
    assert reading.frames == bodies and not reading.errors
    # A frame too long for it: the buffer is back to its first size for what follows (a
    # read into it copies what it takes of such a frame to the frame's own buffer).
    reading.frames.clear()
    bodies = [body(MAX_REUSED + 10, 1), body(MAX_REUSED + 20, 2), body(10, 3)]
    assert REUSED_SIZE in feed_full(bodies)
    assert reading.frames == bodies and len(reader._buffer) == REUSED_SIZE
