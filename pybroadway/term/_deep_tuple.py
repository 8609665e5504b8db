"""Tuples that nest too deeply for CPython to hash them.

CPython hashes a tuple by hashing its items in C, recursing without any bound: a tuple that
holds a tuple that holds a tuple… some tens of thousands deep exhausts the C stack and kills
the process. A BEAM peer may send such a term (the BEAM takes any depth), and pybroadway uses
terms from peers as dict keys (subscription tags, registered names…), so the decoder makes the
tuples that nest more than :data:`HASH_DEPTH` deep a :class:`DeepTuple`: a tuple in every way
but its hash, which it computes with a stack of its own, to the very value CPython gives the
same plain tuple.
"""

from __future__ import annotations

import sys
from typing import Any

HASH_DEPTH = 4096
"""Tuples nested deeper than this are decoded as :class:`DeepTuple`: hashing this many levels
takes a few hundred KiB of C stack, which any thread has."""

_WIDTH = sys.hash_info.width
_MASK = (1 << _WIDTH) - 1
# CPython's tuple hash (xxHash's primes and rotation, Objects/tupleobject.c).
if _WIDTH == 64:
    _PRIME_1, _PRIME_2, _PRIME_5, _ROTATE = (
        11400714785074694791, 14029467366897019727, 2870177450012600261, 31)
else:
    _PRIME_1, _PRIME_2, _PRIME_5, _ROTATE = 2654435761, 2246822519, 374761393, 13


def _combine(lanes: list[int], length: int) -> int:
    """What CPython's tuple hash makes of the hashes of ``length`` items."""
    acc = _PRIME_5
    for lane in lanes:
        acc = (acc + (lane & _MASK) * _PRIME_2) & _MASK
        acc = ((acc << _ROTATE) | (acc >> (_WIDTH - _ROTATE))) & _MASK
        acc = (acc * _PRIME_1) & _MASK
    acc = (acc + (length ^ (_PRIME_5 ^ 3527539))) & _MASK
    if acc == _MASK:
        return 1546275796
    return acc - (1 << _WIDTH) if acc >> (_WIDTH - 1) else acc


def tuple_hash(value: tuple[Any, ...]) -> int:
    """``hash(value)`` for a tuple, whatever its depth: the tuples inside, and the values that
    hash as a tuple of theirs (``_as_tuple()``: ImproperList), are walked with an explicit
    stack, everything else is hashed as usual."""
    # The tuples being hashed, innermost last: (items left, their hashes so far, length).
    stack: list[tuple[Any, list[int], int]] = [(iter(value), [], len(value))]
    while True:
        items, lanes, length = stack[-1]
        for item in items:
            kind: Any = type(item)
            if isinstance(item, tuple) and kind.__hash__ in _TUPLE_HASHES:
                inner = item
            elif hasattr(kind, "_as_tuple"):
                inner = item._as_tuple()
            else:
                lanes.append(hash(item))
                continue
            stack.append((iter(inner), [], len(inner)))
            break
        else:
            result = _combine(lanes, length)
            stack.pop()
            if not stack:
                return result
            stack[-1][1].append(result)


class DeepTuple(tuple[Any, ...]):
    """A tuple that nests tuples more than :data:`HASH_DEPTH` deep, as decoded: equal to the
    plain tuple, with the same hash, computed without recursion. Encodes as a tuple."""

    __slots__ = ()
    __hash__ = tuple_hash


_TUPLE_HASHES = (tuple.__hash__, tuple_hash)
"""The hashes that are CPython's tuple hash: of tuple and its subclasses that keep it, and of
the ones that take :func:`tuple_hash`."""
