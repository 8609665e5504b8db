"""The codec and the connection's buffers: large binaries left apart by ``encode_into`` go
back exactly where they belong, and decoding from a bytearray (a frame in a connection's
buffer) gives what decoding bytes gives, copying a binary once."""

from __future__ import annotations

from typing import Any

import pytest

from pybroadway.term import Atom, Charlist, EncodeError, Encoder, ImproperList, decode_from, encode
from pybroadway.term.encode import LARGE_BINARY

BIG = bytes(range(256)) * (LARGE_BINARY // 256)
TERMS: list[Any] = [
    (Atom("$gen_cast"), (Atom("push_message"), BIG)),
    [BIG, b"small", BIG + b"!", {"k": BIG}, (1, 2.5, None)],
    ImproperList([BIG], BIG),
    bytearray(BIG),  # mutable: copied, never left apart
    b"x" * (LARGE_BINARY - 1),
    [b""] * 3,
]


def put_back(out: bytearray, apart: list[tuple[int, bytes]]) -> bytes:
    pieces, at = [], 0
    for position, binary in apart:
        pieces += [out[at:position], binary]
        at = position
    return b"".join([*pieces, out[at:]])


@pytest.mark.parametrize("term", TERMS)
def test_binaries_left_apart_go_back_where_they_belong(term: Any) -> None:
    out = bytearray(b"head")
    apart: list[tuple[int, bytes]] = []
    Encoder().encode_into(out, term, apart)
    assert put_back(out, apart) == b"head" + encode(term)
    assert all(type(binary) is bytes and len(binary) >= LARGE_BINARY for _, binary in apart)
    assert len(out) + sum(len(binary) for _, binary in apart) == 4 + len(encode(term))
    if isinstance(term, tuple):
        assert apart[0][1] is BIG  # the caller's object, not a copy


def test_a_failed_encoding_leaves_output_and_binaries_as_they_were() -> None:
    out = bytearray(b"head")
    apart: list[tuple[int, bytes]] = [(2, BIG)]
    with pytest.raises(EncodeError):
        Encoder().encode_into(out, [BIG, object()], apart)
    assert out == b"head" and apart == [(2, BIG)]


def test_compressed_encoders_leave_nothing_apart() -> None:
    out = bytearray()
    apart: list[tuple[int, bytes]] = []
    Encoder(compressed=True).encode_into(out, (1, BIG), apart)
    assert apart == [] and bytes(out) == encode((1, BIG), compressed=True)


@pytest.mark.parametrize("term", [*TERMS, Charlist(b"abc"), 2**70, Atom("é" * 200), 1.5])
def test_decoding_from_a_bytearray_is_decoding_from_bytes(term: Any) -> None:
    data = b"\x70" + encode(term) + encode(7)
    expected = decode_from(data, 1)
    for buffer in (bytearray(data), memoryview(bytearray(data))):
        value, end = decode_from(buffer, 1)
        assert (value, end) == expected
        assert decode_from(buffer, end) == (7, len(data))
