"""Terms of any depth, as a BEAM writes and reads them (``binary_to_term`` of a 100,000-deep
tuple round-trips): decoded, encoded and printed without recursion, bounded by their size.

Nothing here uses Python's ``==`` or ``repr`` on a deep value (both recurse): values are
compared with testkit's ``same_term`` and walked in loops."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pybroadway.term import (
    Atom,
    DecodeError,
    Decoder,
    DeepTuple,
    EncodeError,
    Encoder,
    ImproperList,
    MapPairs,
    decode,
    decode_from,
    encode,
    inspect,
    loggable,
)
from pybroadway.term._deep_tuple import HASH_DEPTH
from pybroadway.term._reading import RECURSION_DEPTH
from pybroadway.term.inspect import LOG_TRUNCATE
from testkit.codec import same_term

DEPTH = 100_000  # the depth of the issue; the tests of every kind go 20,000 deep, to be fast
SOME = 20_000
K = Atom("k")

# How a BEAM writes one level of each kind around the term inside (before it, after it), and
# the same level as a Python value.
LEVELS: dict[str, tuple[bytes, bytes, Callable[[Any], Any]]] = {
    "tuple": (b"h\x01", b"", lambda inner: (inner,)),
    "large tuple": (b"i\x00\x00\x01\x00" + b"a\x01" * 255, b"",
                    lambda inner: (1,) * 255 + (inner,)),
    "list": (b"l\x00\x00\x00\x01", b"j", lambda inner: [inner]),
    "list of two": (b"l\x00\x00\x00\x02a\x07", b"j", lambda inner: [7, inner]),
    "map": (b"t\x00\x00\x00\x01w\x01k", b"", lambda inner: {K: inner}),
    "improper tail": (b"l\x00\x00\x00\x01a\x01", b"", lambda inner: ImproperList([1], inner)),
}
LEAF = b"m\x00\x00\x00\x03end"
MIXED = ["tuple", "list", "list of two", "map", "improper tail"]
KINDS = {**{kind: ([kind], SOME) for kind in LEVELS}, "mixed": (MIXED, SOME),
         "tuple": (["tuple"], DEPTH), "large tuple": (["large tuple"], 300)}


def beam_bytes(kinds: list[str], depth: int, leaf: bytes = LEAF) -> bytes:
    """A term nested ``depth`` deep, cycling through ``kinds``, as a BEAM writes it."""
    levels = [LEVELS[kinds[i % len(kinds)]] for i in range(depth)]
    return (b"\x83" + b"".join(before for before, _, _ in levels) + leaf
            + b"".join(after for _, after, _ in reversed(levels)))


def built(kinds: list[str], depth: int, leaf: Any = b"end") -> Any:
    """The same term built in Python, innermost first."""
    value = leaf
    for i in reversed(range(depth)):
        value = LEVELS[kinds[i % len(kinds)]][2](value)
    return value


def down(term: Any) -> Iterator[Any]:
    """The terms on the way down a chain built from LEVELS: the last item of each level."""
    while True:
        yield term
        if isinstance(term, tuple | list) and term:
            term = term[-1]
        elif isinstance(term, dict) and term:
            term = term[K]
        elif isinstance(term, ImproperList):
            term = term.tail
        else:
            return


@pytest.mark.parametrize(("kinds", "depth"), KINDS.values(), ids=KINDS)
def test_a_deep_term_decodes_and_encodes_back(kinds: list[str], depth: int) -> None:
    data = beam_bytes(kinds, depth)
    value = decode(data)
    assert sum(1 for _ in down(value)) == depth + 1
    assert same_term(value, built(kinds, depth), exact=False)
    assert encode(value) == data
    # Two back to back, as in a frame: the deep one does not swallow what follows.
    _, end = decode_from(data + b"\x83a\x05")
    assert end == len(data) and decode_from(data + b"\x83a\x05", end) == (5, len(data) + 3)
    assert same_term(decode(encode(value, compressed=True)), value)


def test_values_built_in_python_encode_at_any_depth() -> None:
    for kinds, depth in KINDS.values():
        assert encode(built(kinds, depth)) == beam_bytes(kinds, depth)
    # subclasses and the pybroadway forms of lists and maps, deep too
    value: Any = b"end"
    for i in range(SOME):
        value = OrderedDict({K: value}) if i % 2 else MapPairs([(K, value)])
    assert encode(value) == beam_bytes(["map"], SOME)


@pytest.mark.parametrize("depth", [3, 200, 20_000])
def test_a_value_inside_itself_is_refused(depth: int) -> None:
    loop: list[Any] = []
    value: Any = loop
    for _ in range(depth):
        value = {K: (value,)}
    loop.append(value)
    with pytest.raises(EncodeError, match="contains itself"):
        encode(value)
    out = bytearray(b"kept")
    with pytest.raises(EncodeError):
        Encoder().encode_into(out, value)
    assert out == b"kept"  # what was written before is all that is left


def test_deep_tuples_hash_without_recursion() -> None:
    """CPython hashes a tuple by recursing in C: a deep enough one kills the process. The
    decoder makes tuples nested past HASH_DEPTH DeepTuples, which hash with a loop, to the
    same value as the plain tuple."""
    value = decode(beam_bytes(["tuple"], DEPTH))
    chain = list(down(value))
    # Plain tuples, but never more than HASH_DEPTH of them down from a DeepTuple (nor more
    # than the recursive decoder's levels above one): what CPython's hash recurses on stays
    # small.
    deep_at = [i for i, t in enumerate(chain) if type(t) is DeepTuple]
    assert deep_at == [i for i in range(RECURSION_DEPTH, DEPTH)
                       if (DEPTH - i) % (HASH_DEPTH + 1) == 0]
    assert {type(t) for t in chain[:-1]} == {tuple, DeepTuple}
    hashed: list[int] = []
    # In a thread with a 1 MiB stack: a plain tuple of this depth needs several.
    previous = threading.stack_size(1 << 20)
    try:
        thread = threading.Thread(target=lambda: hashed.append(hash(value)))
        thread.start()
        thread.join()
    finally:
        threading.stack_size(previous)
    plain: Any = b"end"
    for _ in range(DEPTH):
        plain = (plain,)
    assert hashed == [hash(plain)]  # on the main thread's 8 MiB, CPython manages this depth


def test_a_map_whose_keys_nest_deeply_keeps_its_pairs() -> None:
    deep_key = beam_bytes(["tuple", "list"], SOME)[1:]
    data = b"\x83t\x00\x00\x00\x02" + deep_key + b"a\x01" + b"w\x01ka\x02"
    value = decode(data)
    assert type(value) is MapPairs and len(value) == 2
    assert same_term(value[0][0], built(["tuple", "list"], SOME), exact=False)
    assert value[1] == (K, 2)
    assert encode(value) == data
    with pytest.raises(TypeError):  # a list inside: not hashable, as in Python
        hash(value)
    tuples = decode(b"\x83t\x00\x00\x00\x01" + beam_bytes(["tuple"], SOME)[1:] + b"a\x01")
    assert type(tuples) is MapPairs and hash(tuples) == hash(tuple(tuples))
    # keys that nest no more than RECURSION_DEPTH, or deep values, leave a dict
    for depth, kind in [(RECURSION_DEPTH, dict), (RECURSION_DEPTH + 1, MapPairs)]:
        key = beam_bytes(["tuple"], depth)[1:]
        assert type(decode(b"\x83t\x00\x00\x00\x01" + key + b"a\x01")) is kind
    deep_value = decode(b"\x83t\x00\x00\x00\x01w\x01k" + beam_bytes(["list"], SOME)[1:])
    assert type(deep_value) is dict and sum(1 for _ in down(deep_value)) == SOME + 2


def test_max_depth_still_bounds_when_asked() -> None:
    with pytest.raises(DecodeError, match="max_depth=10"):
        Decoder(max_depth=10).decode(beam_bytes(["list"], 11))
    assert Decoder(max_depth=10).decode(beam_bytes(["list"], 10)) is not None
    with pytest.raises(DecodeError, match="max_depth=1000"):
        Decoder(max_depth=1000).decode(beam_bytes(["map", "tuple"], 1001))
    assert Decoder(max_depth=1000).decode(beam_bytes(["map", "tuple"], 1000)) is not None


@pytest.mark.parametrize("end", [b"i\xff\xff\xff\xff", b"l\x7f\xff\xff\xff", b"t\x10\x00\x00\x00",
                                 b"m\xff\xff\xff\xff"])
def test_a_deep_term_declaring_more_than_its_size_fails_at_once(end: bytes) -> None:
    data = beam_bytes(["tuple", "list", "map"], SOME, leaf=end)
    with pytest.raises(DecodeError, match=r"cannot fit|remain"):
        decode(data)


def test_every_cut_of_a_deep_term_is_a_decode_error() -> None:
    data = beam_bytes([*LEVELS], 100)
    for cut in range(1, len(data), 13):
        with pytest.raises(DecodeError):
            decode(data[:cut])


@pytest.mark.parametrize(("kinds", "depth"), [(["tuple"], SOME), (MIXED, SOME)],
                         ids=["tuple", "mixed"])
def test_a_deep_term_prints_bounded(kinds: list[str], depth: int) -> None:
    value = decode(beam_bytes(kinds, depth))
    assert len(loggable(value)) < 500  # ``limit`` (50) bounds the nesting shown, as in Elixir
    assert len(inspect(value, limit=depth, truncate=LOG_TRUNCATE)) == LOG_TRUNCATE + len(
        " (truncated)")
    whole = inspect(value, limit=depth + 1)  # every level, printed with a loop
    assert whole.count('"end"') == 1 and len(whole) > 2 * depth


def test_deep_improper_lists_hash_without_recursion() -> None:
    """An improper list hashes as the tuple of its parts: a chain of them (in tails or in
    elements) hashes with a loop, not a Python recursion that would fail."""
    tails = decode(beam_bytes(["improper tail"], SOME, leaf=b"a\x02"))
    inside = ImproperList([1, (2, K)], b"t")
    for _ in range(SOME):
        inside = ImproperList([inside], K)
    for value in (tails, inside):
        assert hash(value) == hash(("ImproperList", value.elements, value.tail))
    assert {inside: 1}[inside] == 1
