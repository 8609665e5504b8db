"""The compiled codec against the pure-Python reference: the same bytes from every encode, the
same value (or the same error, message and offset included) from every decode."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pybroadway.term import (
    Atom,
    DecodeError,
    Decoder,
    Encoder,
    ImproperList,
    MapPairs,
    _impl,
    encode,
)
from pybroadway.term._deep_tuple import HASH_DEPTH
from pybroadway.term._reading import RECURSION_DEPTH
from testkit.codec import require_native, same_term
from tests.term.test_hostile import SAMPLES
from tests.term.test_roundtrip import leaves, terms


@pytest.fixture(scope="module", autouse=True)
def implementation() -> Iterator[str]:
    """This module compares the two implementations itself: it needs the native one built."""
    require_native()
    yield "both"


def both(make: Callable[[], Any]) -> tuple[Any, Any]:
    """``make()`` with the pure-Python codec active, then with the native one."""
    previous = _impl.active
    try:
        _impl.select("python")
        pure = make()
        _impl.select("native")
        return pure, make()
    finally:
        _impl.active = previous


def outcome(decode: Callable[[Any], Any], data: Any) -> tuple[Any, ...]:
    try:
        return ("value", decode(data))
    except DecodeError as exc:
        return ("DecodeError", str(exc), exc.offset)
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def same_outcome(expected: tuple[Any, ...], got: tuple[Any, ...]) -> bool:
    if expected[0] == "value":
        return got[0] == "value" and same_term(expected[1], got[1])
    return expected == got


def agree(pure: Decoder, native: Decoder, data: bytes) -> None:
    for convert in (bytes, lambda d: memoryview(bytearray(d))):
        expected, got = outcome(pure.decode, convert(data)), outcome(native.decode, convert(data))
        assert same_outcome(expected, got), (data, expected, got)
    framed = b"\x00" + data + b"\x83j"
    for convert in (bytes, bytearray):  # a frame in a connection's buffer is a bytearray
        expected = outcome(lambda d: pure.decode_from(d, 1), convert(framed))
        got = outcome(lambda d: native.decode_from(d, 1), convert(framed))
        assert same_outcome(expected, got), (data, expected, got)
    body = b"\x70" + data  # as a connection's run of frames: twice, a tick between
    records = (len(body).to_bytes(4, "big") + body) * 2
    records = records[:len(records) // 2] + b"\0\0\0\0" + records[len(records) // 2:]
    for convert in (bytes, bytearray):
        expected = outcome(lambda d: pure.decode_records(d, 0, len(d), b"\x70", 1 << 20),
                           convert(records))
        got = outcome(lambda d: native.decode_records(d, 0, len(d), b"\x70", 1 << 20),
                      convert(records))
        assert same_outcome(expected, got), (data, expected, got)


DECODERS = [both(lambda: Decoder()), both(lambda: Decoder(strings=True, none="undefined")),
            both(lambda: Decoder(max_depth=6, max_inflated=4096, max_inflate_ratio=4))]
ENCODERS = [both(lambda: Encoder()), both(lambda: Encoder(none="undefined")),
            both(lambda: Encoder(compressed=True))]


def test_the_native_codec_is_the_one_in_use() -> None:
    pure, native = DECODERS[0]
    assert type(native._term.__self__).__module__ == "pybroadway.term._ccodec"
    assert not hasattr(pure._term, "__self__")  # a Python function


@settings(max_examples=400, deadline=None)
@given(terms)
def test_same_bytes_from_every_encode(term: Any) -> None:
    for pure, native in ENCODERS:
        expected = outcome(pure.encode, term)
        assert outcome(native.encode, term) == expected
        out = bytearray(b"x")
        native.encode_into(out, term)
        assert bytes(out[1:]) == expected[1]


@settings(max_examples=400, deadline=None)
@given(terms)
def test_same_value_from_every_decode(term: Any) -> None:
    data = encode(term)
    for pure, native in DECODERS:
        agree(pure, native, data)


K = Atom("k")
# One level around a term (``inner``), with a sibling (``side``) at some.
LEVELS: dict[str, Callable[[Any, Any], Any]] = {
    "tuple": lambda inner, side: (inner,),
    "pair": lambda inner, side: (side, inner),
    "list": lambda inner, side: [inner, side],
    "map": lambda inner, side: {K: inner},
    "tail": lambda inner, side: ImproperList([side], inner),
    "key": lambda inner, side: MapPairs([(inner, side)]),
}


class Deep:
    """How to build a deep term: ``depth`` levels, cycling through ``pattern``, around
    ``core``. Its repr is this recipe, not the term (Python's repr of one recurses)."""

    def __init__(self, pattern: list[str], depth: int, core: Any, side: Any) -> None:
        self.pattern, self.depth, self.core, self.side = pattern, depth, core, side

    def __repr__(self) -> str:
        return f"Deep({self.pattern}, {self.depth}, {self.core!r}, {self.side!r})"

    def build(self) -> Any:
        value = self.core
        for i in range(self.depth):
            value = LEVELS[self.pattern[i % len(self.pattern)]](value, self.side)
        return value


# Nested past the codecs' recursive paths (RECURSION_DEPTH), in a random pattern of containers
# around a random term; past HASH_DEPTH too in one example of every kind of level (a second
# each: drawn at random they took half the suite's time of this file).
deep_terms = st.builds(
    Deep, st.lists(st.sampled_from(sorted(LEVELS)), min_size=1, max_size=5),
    st.integers(RECURSION_DEPTH - 4, 3 * RECURSION_DEPTH), terms, leaves)


@settings(max_examples=100, deadline=None)
@example(Deep(sorted(LEVELS), HASH_DEPTH + 9, (1, b"x"), Atom("a")))
@given(deep_terms)
def test_same_bytes_and_values_from_deep_terms(recipe: Deep) -> None:
    term = recipe.build()
    for pure, native in ENCODERS:
        assert outcome(native.encode, term) == outcome(pure.encode, term)
    data = encode(term)
    for pure, native in DECODERS:
        agree(pure, native, data)


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[Any] = terms) -> bytes:
    data = bytearray(encode(draw(source), compressed=draw(st.booleans())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["set", "insert", "delete", "cut"]))
        if action == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 4))]
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=1000, deadline=None)
@given(mutated() | st.binary(max_size=64).map(lambda raw: b"\x83" + raw))
def test_same_value_or_error_from_random_and_mutated_bytes(data: bytes) -> None:
    for pure, native in DECODERS:
        agree(pure, native, data)


@settings(max_examples=100, deadline=None)
@given(mutated(deep_terms.map(Deep.build)))
def test_same_value_or_error_from_mutated_deep_terms(data: bytes) -> None:
    for pure, native in DECODERS:
        agree(pure, native, data)


def test_same_outcome_on_100_000_mutations_of_real_traffic() -> None:
    rng = random.Random(99)
    pure, native = DECODERS[2]
    for _ in range(100_000):
        data = bytearray(rng.choice(SAMPLES))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(1, len(data))] = rng.randrange(256)
        data = bytes(data)
        expected, got = outcome(pure.decode, data), outcome(native.decode, data)
        assert same_outcome(expected, got), (data, expected, got)


def test_atoms_are_the_interned_ones_and_caches_bounded_the_same() -> None:
    pure, native = DECODERS[0]
    decoded = native.decode(encode([Atom("native_x"), Atom("native_y")]))
    assert decoded[0] is Atom("native_x") and decoded[1] is pure.decode(encode(Atom("native_y")))


@pytest.mark.parametrize("value", [math.inf, -math.nan, "\ud800", 1 << 70, -(1 << 64), object()])
def test_what_the_native_encoder_hands_back_fails_or_succeeds_the_same(value: Any) -> None:
    for pure, native in ENCODERS:
        assert outcome(native.encode, value) == outcome(pure.encode, value)


def test_any_depth_is_the_same_bytes_and_a_value_inside_itself_the_same_error() -> None:
    nested: list[Any] = []
    for _ in range(100_000):
        nested = [nested]
    inside: list[Any] = [1]
    inside.append({K: (inside,)})
    for pure, native in ENCODERS:
        for value in (nested, inside, [nested, inside]):
            assert outcome(native.encode, value) == outcome(pure.encode, value)
    assert outcome(native.encode, inside)[0] == "EncodeError"
