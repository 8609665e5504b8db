"""Property-based round trips: every value Python can build survives encode → decode."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pybroadway.term import (
    Atom,
    BitBinary,
    Charlist,
    Decoder,
    ExportFun,
    ImproperList,
    Pid,
    Port,
    Reference,
    decode,
    decode_from,
    encode,
)

atoms = st.text(max_size=255).filter(lambda s: s not in ("true", "false", "nil")).map(Atom)
nodes = st.from_regex(r"[a-z][a-z0-9_]{0,10}@[a-z]{1,8}", fullmatch=True).map(Atom)
u32 = st.integers(0, 2**32 - 1)
pids = st.builds(Pid, nodes, u32, u32, u32)
refs = st.builds(Reference, nodes, u32, st.lists(u32, min_size=1, max_size=5))
ports = st.builds(Port, nodes, st.integers(0, 2**64 - 1), u32)
bitbins = st.builds(lambda data, bits: BitBinary(data[:-1] + bytes(
    [data[-1] & (0xFF << (8 - bits)) & 0xFF]), bits), st.binary(min_size=1), st.integers(1, 8))
leaves = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.binary() | atoms | pids | refs | ports | bitbins
    | st.builds(Charlist, st.binary(max_size=300))
    | st.builds(ExportFun, atoms, atoms, st.integers(0, 255))
)
keys = st.recursive(leaves, lambda inner: st.tuples(inner, inner), max_leaves=4)


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (st.lists(inner, max_size=6)
            | st.lists(inner, max_size=6).map(tuple)
            | st.dictionaries(keys, inner, max_size=6)
            | st.builds(ImproperList, st.lists(inner, min_size=1, max_size=4),
                        leaves.filter(lambda x: x != [])))


terms = st.recursive(leaves, containers, max_leaves=40)


def same(a: Any, b: Any) -> bool:
    """Equality that also tells True from 1 and 1.0 from 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, ImproperList):
        return same(a.elements, b.elements) and same(a.tail, b.tail)
    if isinstance(a, float):
        return a == b and str(a) == str(b)  # tells 0.0 from -0.0
    return a == b


def normal(term: Any) -> Any:
    """What a value becomes after a trip through the BEAM's types: lists of the decoder's
    making, improper lists keep tuples of elements."""
    if isinstance(term, ImproperList):
        return ImproperList([normal(x) for x in term.elements], normal(term.tail))
    if type(term) is list:
        return [normal(x) for x in term]
    if type(term) is tuple:
        return tuple(normal(x) for x in term)
    if type(term) is dict:
        return {k: normal(v) for k, v in term.items()}
    return term


@settings(max_examples=200, deadline=None)
@given(terms)
def test_round_trip(term: Any) -> None:
    assert same(decode(encode(term)), normal(term))


@settings(max_examples=60, deadline=None)
@given(terms)
def test_round_trip_compressed_and_from_memoryview(term: Any) -> None:
    data = encode(term, compressed=True)
    assert same(decode(memoryview(bytearray(data))), normal(term))


@settings(max_examples=60, deadline=None)
@given(terms, terms)
def test_two_terms_back_to_back(first: Any, second: Any) -> None:
    data = encode(first) + encode(second)
    one, offset = decode_from(data)
    two, end = decode_from(data, offset)
    assert same(one, normal(first)) and same(two, normal(second)) and end == len(data)


@given(st.text())
def test_str_goes_as_binary_and_comes_back_as_str_on_request(text: str) -> None:
    assert decode(encode(text)) == text.encode()
    assert decode(encode(text), strings=True) == text


def test_none_maps_to_nil_or_undefined() -> None:
    assert encode(None) == encode(Atom("nil"))
    assert encode(None, none="undefined") == encode(Atom("undefined"))
    assert decode(encode(Atom("undefined"))) == Atom("undefined")
    assert Decoder(none="undefined").decode(encode(Atom("undefined"))) is None
    assert Decoder(none="undefined").decode(encode(Atom("nil"))) == Atom("nil")


def test_atoms_are_interned_and_not_strings() -> None:
    assert Atom("ok") is Atom("ok")
    assert Atom("ok") != "ok"
    assert decode(encode(Atom("ok"))) is Atom("ok")
    assert {Atom("ok"): 1, "ok": 2, b"ok": 3} == {Atom("ok"): 1, "ok": 2, b"ok": 3}


def test_atoms_nothing_uses_are_freed() -> None:
    """The interning table holds only atoms in use: a million distinct atoms from a peer cost
    nothing once they are gone."""
    import gc

    gc.collect()  # atoms earlier tests left in garbage cycles must not go during the count
    before = Atom.count()
    decoder = Decoder()  # its caches (bounded) go with it, as a connection's do
    decoded = decoder.decode(encode([Atom(f"distinct_{i}") for i in range(50_000)]))
    assert Atom.count() >= before + 50_000
    kept = decoded[7]
    del decoded, decoder
    gc.collect()
    assert Atom.count() <= before + 1
    assert Atom("distinct_7") is kept  # a live atom stays the one atom of its name
    assert Atom.existing("distinct_8") is None
