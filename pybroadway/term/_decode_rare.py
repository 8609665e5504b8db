"""Decoding the tags that seldom travel: funs, ports, old identifier forms, big integers,
bitstrings, long atoms, text floats, compressed terms, and the refusal of the rest.

They live apart from :mod:`pybroadway.term.decode` so that its loop holds only what makes up
the traffic; it hands any other tag to the function :func:`rare_reader` builds, at the cost of
one call for these terms alone.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from pybroadway.term import tags as T
from pybroadway.term._reading import (
    ID_WORDS,
    AtomReader,
    TermReader,
    need,
    truncated,
    two_u32,
    u16,
    u32,
    u64,
)
from pybroadway.term.errors import DecodeError
from pybroadway.term.types import BitBinary, ExportFun, Fun, Pid, Port, Reference

RareReader = Callable[[Any, int, int, int], tuple[Any, int]]
"""Reads a term whose tag byte ``tag`` sits just before ``pos``: ``(data, pos, tag, depth)``."""

_TAG_NAMES = {value: name for name, value in vars(T).items() if name.isupper()}


def _keep_form(value: Any, data: Any, start: int, stop: int) -> Any:
    """Remember how an identifier was written (NEW_PORT_EXT or V4_PORT_EXT, old 8-bit
    creations…), so that it is re-encoded exactly as it came."""
    object.__setattr__(value, "_ext", bytes(data[start:stop]))
    return value


def rare_reader(term: TermReader, atom_at: AtomReader,
                atom_value: Callable[[Any, bool, int], Any], max_depth: int | None
                ) -> RareReader:
    """Make the reader of the rare tags, on top of the decoder's own ``term``, ``atom_at``
    (an atom where the format requires one) and ``atom_value`` (an atom from its text)."""

    def reference(data: Any, pos: int, tag: int, depth: int) -> tuple[Any, int]:
        # NEWER_REFERENCE_EXT whose node atom is not cached yet, or NEW_REFERENCE_EXT.
        start = pos - 1
        need(data, pos, 2, "a reference's length")
        (words,) = u16(data, pos)
        if not 1 <= words <= 5:
            raise DecodeError(f"a reference has 1 to 5 id words, not {words}", pos)
        node, pos = atom_at(data, pos + 2, "a reference's node")
        if tag == T.NEWER_REFERENCE_EXT:
            need(data, pos, 4 + 4 * words, "a reference")
            (creation,) = u32(data, pos)
            pos += 4
        else:
            need(data, pos, 1 + 4 * words, "a reference")
            creation = data[pos]
            pos += 1
        ids = ID_WORDS[words](data, pos)
        pos += 4 * words
        ref = Reference(node, creation, ids)
        if tag == T.NEWER_REFERENCE_EXT:
            return ref, pos
        return _keep_form(ref, data, start, pos), pos

    def big_integer(data: Any, pos: int, tag: int, depth: int) -> tuple[Any, int]:
        if tag == T.SMALL_BIG_EXT:
            need(data, pos, 2, "a big integer's header")
            size = data[pos]
            pos += 1
        else:
            need(data, pos, 5, "a big integer's header")
            (size,) = u32(data, pos)
            pos += 4
        sign = data[pos]
        pos += 1
        end = len(data)
        if size > end - pos:
            raise DecodeError(
                f"big integer declares {size} bytes but only {end - pos} remain", pos)
        value = int.from_bytes(data[pos:pos + size], "little")
        return (-value if sign else value), pos + size

    def long_atom(data: Any, pos: int, tag: int, depth: int) -> tuple[Any, int]:
        # ATOM_UTF8_EXT (over 255 bytes), or the latin-1 ATOM_EXT and SMALL_ATOM_EXT.
        if tag == T.SMALL_ATOM_EXT:
            need(data, pos, 1, "an atom's length")
            size = data[pos]
            pos += 1
        else:
            need(data, pos, 2, "an atom's length")
            (size,) = u16(data, pos)
            pos += 2
        need(data, pos, size, "an atom")
        return atom_value(data[pos:pos + size], tag != T.ATOM_UTF8_EXT, pos), pos + size

    def bitstring(data: Any, pos: int, tag: int, depth: int) -> tuple[Any, int]:
        need(data, pos, 5, "a bitstring's header")
        (size,) = u32(data, pos)
        bits = data[pos + 4]
        pos += 5
        end = len(data)
        if size > end - pos:
            raise DecodeError(
                f"bitstring declares {size} bytes but only {end - pos} remain", pos)
        if size == 0 or not 1 <= bits <= 8:
            raise DecodeError(f"bitstring of {size} bytes cannot have {bits} bits", pos)
        return BitBinary(data[pos:pos + size], bits), pos + size

    def port(data: Any, pos: int, tag: int, depth: int) -> tuple[Any, int]:
        start = pos - 1
        node, pos = atom_at(data, pos, "a port's node")
        if tag == T.V4_PORT_EXT:
            need(data, pos, 12, "a port")
            (port_id,) = u64(data, pos)
            (creation,) = u32(data, pos + 8)
            size = 12
        elif tag == T.NEW_PORT_EXT:
            need(data, pos, 8, "a port")
            port_id, creation = two_u32(data, pos)
            size = 8
        else:
            need(data, pos, 5, "a port")
            port_id, creation, size = u32(data, pos)[0], data[pos + 4], 5
        value = Port(node, port_id, creation)
        return _keep_form(value, data, start, pos + size), pos + size

    def oldest_reference(data: Any, pos: int, tag: int, depth: int) -> tuple[Any, int]:
        # REFERENCE_EXT: one id word, 8-bit creation.
        start = pos - 1
        node, pos = atom_at(data, pos, "a reference's node")
        need(data, pos, 5, "a reference")
        ref = Reference(node, data[pos + 4], (u32(data, pos)[0],))
        return _keep_form(ref, data, start, pos + 5), pos + 5

    def old_pid(data: Any, pos: int, tag: int, depth: int) -> tuple[Any, int]:
        # PID_EXT, before OTP 23.
        start = pos - 1
        node, pos = atom_at(data, pos, "a pid's node")
        need(data, pos, 9, "a pid")
        pid_id, serial = two_u32(data, pos)
        pid = Pid(node, pid_id, serial, data[pos + 8])
        return _keep_form(pid, data, start, pos + 9), pos + 9

    def export_fun(data: Any, pos: int, tag: int, depth: int) -> tuple[Any, int]:
        module, pos = atom_at(data, pos, "an export fun's module")
        function, pos = atom_at(data, pos, "an export fun's function")
        arity, pos = term(data, pos, depth)
        if type(arity) is not int:
            raise DecodeError("expected an integer arity in an export fun", pos)
        return ExportFun(module, function, arity), pos

    def fun(data: Any, pos: int, tag: int, depth: int) -> tuple[Any, int]:
        # NEW_FUN_EXT
        start = pos - 1
        end = len(data)
        need(data, pos, 29, "a fun's header")
        (size,) = u32(data, pos)
        if size < 29 or size > end - pos:
            raise DecodeError(f"fun declares {size} bytes, which the input lacks", pos)
        arity = data[pos + 4]
        uniq = bytes(data[pos + 5:pos + 21])
        index, free_count = two_u32(data, pos + 21)
        if max_depth is not None and depth >= max_depth:
            raise DecodeError(f"terms nest deeper than max_depth={max_depth}", pos)
        pos += 29
        module, pos = atom_at(data, pos, "a fun's module")
        _old_index, pos = term(data, pos, depth + 1)
        _old_uniq, pos = term(data, pos, depth + 1)
        pid, pos = term(data, pos, depth + 1)
        if type(pid) is not Pid:
            raise DecodeError("expected a pid in a fun", pos)
        if free_count > end - pos:
            raise DecodeError(f"fun declares {free_count} free variables", pos)
        free = []
        for _ in range(free_count):
            value, pos = term(data, pos, depth + 1)
            free.append(value)
        if pos != start + 1 + size:
            raise DecodeError("a fun's declared size does not match its contents", pos)
        return Fun(module, arity, index, uniq, pid, tuple(free), bytes(data[start:pos])), pos

    def text_float(data: Any, pos: int, tag: int, depth: int) -> tuple[Any, int]:
        # FLOAT_EXT, the old text form.
        need(data, pos, 31, "a float")
        text = bytes(data[pos:pos + 31]).split(b"\0", 1)[0]
        try:
            return float(text), pos + 31
        except ValueError:
            raise DecodeError(f"bad float text {text!r}", pos) from None

    readers: dict[int, RareReader] = {
        T.NEWER_REFERENCE_EXT: reference, T.NEW_REFERENCE_EXT: reference,
        T.SMALL_BIG_EXT: big_integer, T.LARGE_BIG_EXT: big_integer,
        T.ATOM_UTF8_EXT: long_atom, T.ATOM_EXT: long_atom, T.SMALL_ATOM_EXT: long_atom,
        T.BIT_BINARY_EXT: bitstring,
        T.V4_PORT_EXT: port, T.NEW_PORT_EXT: port, T.PORT_EXT: port,
        T.REFERENCE_EXT: oldest_reference,
        T.PID_EXT: old_pid,
        T.EXPORT_EXT: export_fun,
        T.NEW_FUN_EXT: fun,
        T.FLOAT_EXT: text_float,
    }

    def rare(data: Any, pos: int, tag: int, depth: int) -> tuple[Any, int]:
        reader = readers.get(tag)
        if reader is not None:
            return reader(data, pos, tag, depth)
        name = _TAG_NAMES.get(tag)
        if name is not None:
            raise DecodeError(
                f"tag {tag} ({name}) is not accepted here: it is internal to the BEAM or "
                f"needs a negotiated feature pybroadway does not use", pos - 1)
        raise DecodeError(f"unknown term tag {tag}", pos - 1)

    return rare


#: With a ratio set, every compressed term may inflate to this much whatever its size.
INFLATE_FLOOR = 64 * 1024


def inflate(term: TermReader, data: Any, pos: int, max_inflated: int,
            max_ratio: int | None = None) -> tuple[Any, int]:
    """Decode the compressed term whose COMPRESSED tag is at ``pos``; return it and the offset
    after it. ``max_inflated`` bounds the size it may declare, and so does ``max_ratio`` times
    its compressed size (at least :data:`INFLATE_FLOOR`) when given."""
    if pos + 5 > len(data):
        raise truncated(pos, "a compressed term's size")
    (size,) = u32(data, pos + 1)
    if size > max_inflated:
        raise DecodeError(
            f"compressed term declares {size} bytes, more than the limit of "
            f"{max_inflated} (raise max_inflated to accept it)", pos)
    compressed = len(data) - pos - 5
    if max_ratio is not None and size > max(INFLATE_FLOOR, max_ratio * compressed):
        raise DecodeError(
            f"compressed term declares {size} bytes from {compressed}, more than "
            f"max_inflate_ratio={max_ratio} times (raise it to accept it)", pos)
    inflater = zlib.decompressobj()
    try:
        inflated = inflater.decompress(data[pos + 5:], size + 1)
    except zlib.error as exc:
        raise DecodeError(f"compressed term is corrupt: {exc}", pos + 5) from None
    if len(inflated) != size or not inflater.eof:
        raise DecodeError(
            f"compressed term inflates to {len(inflated)} bytes"
            f"{'' if inflater.eof else ' or more'}, but declares {size}", pos + 5)
    consumed = len(data) - len(inflater.unused_data)
    try:
        value, inner_end = term(inflated, 0, 0)
    except DecodeError as exc:
        raise DecodeError(f"inside the compressed term: {exc}", pos + 5) from None
    except RecursionError:
        raise DecodeError("term nests too deeply for the Python stack", pos) from None
    if inner_end != size:
        raise DecodeError("compressed term has trailing bytes", pos + 5)
    return value, consumed
