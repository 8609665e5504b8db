"""Bounds-checked reading of the external term format: what the decoder's modules share."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from pybroadway.term.errors import DecodeError
from pybroadway.term.types import MapPairs, freeze

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


def map_from_items(items: Sequence[Any], arity: int) -> Any:
    """The map of ``arity`` pairs whose keys and values alternate in ``items``: a dict (keys
    that are lists or maps in their frozen forms), or MapPairs when Python would merge keys
    that Erlang keeps apart (1 and 1.0, true and 1)."""
    keys, values = items[::2], items[1::2]
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
