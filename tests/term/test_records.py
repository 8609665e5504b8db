"""Decoder.decode_records: the terms of length-prefixed records that share a prefix, read in
one call (a distribution connection's run of like frames), and where it stops."""

from __future__ import annotations

import pytest

from pybroadway.term import Atom, Decoder, Pid, encode
from pybroadway.term._reading import RECURSION_DEPTH

PREFIX = b"\x70" + encode((22, Pid(Atom("a@h"), 1, 0, 1), Pid(Atom("b@h"), 2, 0, 1)))
OTHER = b"\x70" + encode((22, Pid(Atom("a@h"), 1, 0, 1), Pid(Atom("b@h"), 3, 0, 1)))
CAST = (Atom("$gen_cast"), (Atom("push_message"), b"twelve bytes"))
TICK = b"\0\0\0\0"
LARGEST = 1 << 20


def record(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def sent(term: object, prefix: bytes = PREFIX) -> bytes:
    return record(prefix + encode(term))


def read(data: bytes | bytearray, pos: int = 0, end: int | None = None,
         largest: int = LARGEST) -> tuple[list[object], int]:
    return Decoder().decode_records(data, pos, len(data) if end is None else end, PREFIX,
                                    largest)


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_a_run_with_ticks_between_is_read_whole(kind: type) -> None:
    terms = [CAST, 1, [b"a", 2.5], {b"k": Atom("v")}, 2**70, Atom("ä" * 200)]
    data = kind(TICK + b"".join(sent(t) + TICK for t in terms))
    assert read(data) == (terms, len(data))


def test_it_starts_at_pos_and_reads_up_to_end_only() -> None:
    head = sent(0)
    data = head + sent(1) + sent(2)
    assert read(data, len(head), len(data) - 1) == ([1], len(head) + len(sent(1)))


@pytest.mark.parametrize("stopper", [
    sent(CAST, OTHER),                               # another control
    record(PREFIX),                                  # a control alone, no message
    record(PREFIX + b"\x83"),                        # a version byte, no term
    record(PREFIX + encode([CAST] * 50, compressed=True)),  # compressed
    record(PREFIX + encode(CAST) + b"\0"),           # a byte after the term
    record(PREFIX + encode(CAST)[:-1]),              # the term cut short
    record(PREFIX + b"\x83\x68\x02\xff\xff"),        # undecodable
    record(PREFIX + b"\x84" + encode(CAST)[1:]),     # not the version byte
    record(b"\x71" + PREFIX[1:] + encode(CAST)),     # not pass-through
    sent(b"x" * 100)[:50],                           # incomplete
], ids=["other", "no-message", "no-term", "compressed", "trailing", "short", "undecodable",
        "version", "type", "incomplete"])
def test_it_stops_at_the_first_record_not_taken_and_says_where(stopper: bytes) -> None:
    data = bytearray(sent(1) + TICK + sent(2) + stopper + sent(3))
    assert read(data) == ([1, 2], len(sent(1) + TICK + sent(2)))


def test_a_term_is_read_within_its_record_only() -> None:
    # The record's length cuts the list short; the next record's bytes would complete it.
    whole = encode([1, 2])
    cut = record(PREFIX + whole[:-2])
    data = sent(0) + cut + whole[-2:]
    assert read(data) == ([0], len(sent(0)))


def test_a_record_longer_than_largest_is_left() -> None:
    data = sent(b"x" * 10) + sent(b"x" * 100)
    assert read(data, largest=len(sent(b"x" * 10)) - 4) == ([b"x" * 10], len(sent(b"x" * 10)))


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_terms_of_any_depth_are_read(kind: type) -> None:
    deep: object = b"leaf"
    for _ in range(RECURSION_DEPTH * 3):
        deep = (deep,)
    data = kind(sent(deep) + sent(1))
    assert read(data) == ([deep, 1], len(data))


def test_nothing_whole_reads_nothing() -> None:
    assert read(b"") == ([], 0)
    assert read(b"\0\0\0") == ([], 0)
    assert read(TICK) == ([], 4)


@pytest.mark.parametrize(("pos", "end"), [(-1, 4), (5, 4), (0, 99)])
def test_bounds_outside_the_data_are_refused(pos: int, end: int) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        read(sent(1), pos, end)
