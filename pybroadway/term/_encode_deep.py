"""Encoding values nested past :data:`~pybroadway.term._reading.RECURSION_DEPTH`, with an
explicit stack instead of recursion.

The encoder's recursive ``write`` is the fast way for the shallow values that make up the
traffic; when it meets a container nested deeper than that bound it hands it to the writer built
here, which keeps the containers it is inside of in a list, so that any depth costs heap and
never the C or the Python stack, as on the BEAM. The compiled encoder hands such containers to
this same writer. A value that contains itself would never end: it is refused as soon as a
container turns up inside itself.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping
from itertools import chain
from typing import Any

from pybroadway.term import tags as T
from pybroadway.term.errors import EncodeError
from pybroadway.term.types import FrozenList, FrozenMap, ImproperList, MapPairs

LeafWriter = Callable[[Any, bytearray], None]
"""Appends a value that holds no other terms (and any the iterative writer does not open)."""

_u32 = struct.Struct(">I").pack
_NIL = bytes((T.NIL_EXT,))
_END: Any = object()


def _opened(value: Any) -> tuple[bytes, Iterator[Any], bytes] | None:
    """For a container: its head, its terms in the order they are written, and what follows
    them; None for anything else. Subclasses count as what they are, as ``write`` has it."""
    kind = type(value)
    if kind is tuple:
        arity = len(value)
        head = (bytes((T.SMALL_TUPLE_EXT, arity)) if arity < 256
                else bytes((T.LARGE_TUPLE_EXT,)) + _u32(arity))
        return head, iter(value), b""
    if kind is list or kind is FrozenList:
        if not value:
            return None
        return bytes((T.LIST_EXT,)) + _u32(len(value)), iter(value), _NIL
    if kind is dict or kind is FrozenMap:
        return (bytes((T.MAP_EXT,)) + _u32(len(value)), chain.from_iterable(value.items()),
                b"")
    if kind is MapPairs:
        return bytes((T.MAP_EXT,)) + _u32(len(value)), chain.from_iterable(value), b""
    if kind is ImproperList:
        return (bytes((T.LIST_EXT,)) + _u32(len(value.elements)),
                chain(value.elements, (value.tail,)), b"")
    if isinstance(value, tuple):
        return _opened(tuple(value))
    if isinstance(value, list):
        return _opened(list(value))
    if isinstance(value, Mapping):
        return _opened(dict(value))
    return None


def deep_writer(write: LeafWriter) -> LeafWriter:
    """Make the iterative writer on top of the encoder's ``write``, which writes what holds no
    other terms."""

    def deep(value: Any, out: bytearray) -> None:
        # The containers being written, innermost last: (terms left, what follows them, id).
        stack: list[tuple[Iterator[Any], bytes, int]] = []
        inside: set[int] = set()  # their ids, to find a value inside itself
        while True:
            opening = _opened(value)
            if opening is None:
                write(value, out)
            else:
                if id(value) in inside:
                    raise EncodeError("the value contains itself")
                head, terms, closing = opening
                out += head
                stack.append((terms, closing, id(value)))
                inside.add(id(value))
            while stack:
                terms, closing, ident = stack[-1]
                value = next(terms, _END)
                if value is not _END:
                    break
                out += closing
                stack.pop()
                inside.discard(ident)
            else:
                return

    return deep
