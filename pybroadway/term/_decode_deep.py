"""Decoding containers nested past :data:`~pybroadway.term._reading.RECURSION_DEPTH`, with
an explicit stack instead of recursion.

A BEAM decodes and writes terms of any depth (``binary_to_term`` of a 100,000-deep tuple
round-trips), so a peer may legitimately send one. The decoder's recursive loop is the fast
way for the shallow terms that make up the traffic; when it meets a container nested deeper
than that bound it hands the container to the reader built here, which holds the open
containers in a list, so that nesting costs heap (bounded by the input's size, as every
container takes at least two bytes) and never the C or the Python stack. The compiled decoder
hands such containers to this same reader: one implementation, so both give the same values
and the same errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pybroadway.term._deep_tuple import HASH_DEPTH, DeepTuple
from pybroadway.term._reading import TermReader, map_from_items, need, truncated, u32
from pybroadway.term.errors import DecodeError
from pybroadway.term.types import ImproperList

DeepReader = Callable[[Any, int, int], tuple[Any, int]]
"""``(data, pos, depth) -> (term, end)``: the container whose tag byte is at ``pos``, itself
nested ``depth`` deep."""

_TUPLE, _LIST, _TAIL, _MAP = 0, 1, 2, 3


def deep_reader(term: TermReader, max_depth: int | None, handoffs: list[int]) -> DeepReader:
    """Make the iterative reader on top of the decoder's ``term`` (which reads everything but
    containers here). Each call adds one to ``handoffs[0]``: the recursive decoder compares it
    around a map's items to learn whether a key may nest too deeply to be hashed."""

    def deep(data: Any, pos: int, depth: int) -> tuple[Any, int]:
        handoffs[0] += 1
        end = len(data)
        # The terms read so far of the open containers, all in one list, and for each open
        # container (innermost last) its kind, where its terms start in that list, how many
        # it holds, and its height: how deep containers nest in what is read of it, down to
        # any DeepTuple (which hashes without recursion); past HASH_DEPTH a tuple is one.
        # Flat lists of numbers: an open container costs a few machine words.
        values: list[Any] = []
        kinds: list[int] = []
        starts: list[int] = []
        counts: list[int] = []
        heights: list[int] = []
        while True:
            if pos >= end:
                raise truncated(pos, "a term (expected a tag byte)")
            tag = data[pos]
            if tag == 104 or tag == 105 or tag == 108 or tag == 116:
                kind, count, pos = _header(data, pos, tag)
                if max_depth is not None and depth + len(kinds) >= max_depth:
                    raise DecodeError(f"terms nest deeper than max_depth={max_depth}", pos)
                kinds.append(kind)
                starts.append(len(values))
                counts.append(count)
                heights.append(0)
                value = _NOTHING
            else:
                value, pos = term(data, pos, depth + len(kinds))
            height = 0
            # Hand the value to the containers it completes, innermost first.
            while kinds:
                if value is not _NOTHING:
                    values.append(value)
                    if height > heights[-1]:
                        heights[-1] = height
                start = starts[-1]
                if len(values) - start < counts[-1]:
                    break
                kind = kinds[-1]
                height = heights[-1] + 1
                if kind == _LIST:
                    if not (pos < end and data[pos] == 106):
                        kinds[-1] = _TAIL  # the next term is the list's tail
                        counts[-1] += 1
                        break
                    pos += 1
                    value = values[start:]
                elif kind == _TUPLE:
                    if height > HASH_DEPTH:
                        value, height = DeepTuple(values[start:]), 0
                    else:
                        value = tuple(values[start:])
                elif kind == _MAP:
                    value = map_from_items(values[start:], (len(values) - start) // 2)
                else:
                    tail = values.pop()
                    if len(values) == start:
                        raise DecodeError("a list of length 0 must be written as NIL_EXT", pos)
                    value = ImproperList(values[start:], tail)
                del values[start:]
                kinds.pop()
                starts.pop()
                counts.pop()
                heights.pop()
            else:
                return value, pos

    return deep


_NOTHING: Any = object()
"""Marks a container just opened: there is no value yet to hand to it."""


def _header(data: Any, pos: int, tag: int) -> tuple[int, int, int]:
    """The kind of the container whose ``tag`` is at ``pos``, how many terms it holds, and
    where they start; its declared size checked against the input as the recursive decoder
    does, with the same errors."""
    end = len(data)
    if tag == 104:
        if pos + 1 >= end:
            raise truncated(pos + 1, "a tuple's arity")
        count, kind, pos = data[pos + 1], _TUPLE, pos + 2
        too_long, what = count > end - pos, f"tuple of arity {count}"
    else:
        kind = _TUPLE if tag == 105 else _LIST if tag == 108 else _MAP
        need(data, pos + 1, 4, _SIZE_NAMES[kind])
        (count,) = u32(data, pos + 1)
        pos += 5
        if kind == _MAP:
            too_long, what = count > (end - pos) // 2, f"map of {count} pairs"
            count *= 2
        else:
            too_long = count > end - pos
            what = f"tuple of arity {count}" if kind == _TUPLE else f"list of {count} elements"
    if too_long:
        raise DecodeError(f"{what} cannot fit in the input", pos)
    return kind, count, pos


_SIZE_NAMES = {_TUPLE: "a tuple's arity", _LIST: "a list's length", _MAP: "a map's arity"}
