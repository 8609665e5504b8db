"""Bounds-checked reading of the external term format: what the decoder's modules share."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from pybroadway.term._deep_tuple import DeepTuple
from pybroadway.term.errors import DecodeError
from pybroadway.term.types import ImproperList, MapPairs, freeze

RECURSION_DEPTH = 64
"""How deeply the codec's recursive paths nest containers; deeper ones are decoded, encoded
and printed with an explicit stack, so that any depth a BEAM writes costs no C or Python
stack. Also how deeply a map key may nest and still be hashed: CPython hashes and compares
tuples by recursing on the C stack, without bound."""

TermReader = Callable[[Any, int, int], tuple[Any, int]]
"""Reads the term at ``pos`` of ``data`` nested ``depth`` deep; returns it and the offset
after it."""

AtomReader = Callable[[Any, int, str], tuple[Any, int]]
"""Reads the atom the format requires at ``pos`` (the third argument names it for errors)."""

u16 = struct.Struct(">H").unpack_from
u32 = struct.Struct(">I").unpack_from
i32 = struct.Struct(">i").unpack_from
u64 = struct.Struct(">Q").unpack_from
f64 = struct.Struct(">d").unpack_from
two_u32 = struct.Struct(">II").unpack_from
three_u32 = struct.Struct(">III").unpack_from

ID_WORDS: list[Callable[[Any, int], tuple[int, ...]]] = [
    struct.Struct(f">{n}I").unpack_from for n in range(6)]
"""``ID_WORDS[n]`` reads a reference's ``n`` id words (1 to 5)."""


def truncated(pos: int, what: str) -> DecodeError:
    """The error for input that ends inside ``what``."""
    return DecodeError(f"input ends inside {what}", pos)


def need(data: Any, pos: int, size: int, what: str) -> None:
    """Check that ``size`` bytes of ``what`` remain at ``pos``."""
    if pos + size > len(data):
        raise truncated(pos, what)


def _hashable(term: Any) -> bool:
    try:
        hash(term)
    except TypeError:
        return False
    return True


def nests_deeper(term: Any, levels: int) -> bool:
    """Whether containers nest in ``term`` more than ``levels`` deep (walked with a stack of
    its own, and no further than ``levels``). A fun's free variables are not looked at: a fun
    hashes by its bytes."""
    pending = [(term, 0)]
    while pending:
        term, depth = pending.pop()
        kind = type(term)
        if kind is tuple or kind is list or kind is MapPairs or kind is DeepTuple:
            inner: Any = term
        elif kind is dict:
            inner = [*term, *term.values()]
        elif kind is ImproperList:
            inner = [*term.elements, term.tail]
        else:
            continue
        if depth == levels:
            return True
        pending.extend((item, depth + 1) for item in inner)
    return False


def map_from_items(items: Sequence[Any], arity: int) -> Any:
    """The map of ``arity`` pairs whose keys and values alternate in ``items``: a dict (keys
    that are lists or maps in their frozen forms), or MapPairs when Python would merge keys
    that Erlang keeps apart (1 and 1.0, true and 1) or when a key nests containers deeper than
    :data:`RECURSION_DEPTH` (hashing it would recurse that deep)."""
    keys, values = items[::2], items[1::2]
    if any(nests_deeper(key, RECURSION_DEPTH) for key in keys):
        return MapPairs(zip(keys, values, strict=True))
    try:
        result = dict(zip(keys, values, strict=True))
    except TypeError:  # keys that are lists or maps: their frozen forms
        result = {}
        for key, value in zip(keys, values, strict=True):
            try:
                result[key] = value
            except TypeError:
                result[freeze(key)] = value
    if len(result) != arity:
        return MapPairs((key if _hashable(key) else freeze(key), value)
                        for key, value in zip(keys, values, strict=True))
    return result
