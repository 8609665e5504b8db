"""Decoding the external term format.

Speed matters here: every frame a peer sends passes through :class:`Decoder`. The decoder
works on ``bytes`` or a read-only ``memoryview`` without copying the input, caches what recurs
(atoms, pids) keyed by their raw bytes, decodes leaves inline in container loops, and checks
every declared length against the input before using it, so hostile input fails at once with a
:class:`DecodeError` instead of allocating or recursing without bound.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from pybroadway.term import tags as T
from pybroadway.term.errors import DecodeError
from pybroadway.term.types import (
    Atom,
    BitBinary,
    Charlist,
    ExportFun,
    Fun,
    ImproperList,
    MapPairs,
    Pid,
    Port,
    Reference,
    freeze,
)

DEFAULT_MAX_DEPTH = 256
"""How deeply containers may nest before decoding stops (a guard against hostile input)."""

DEFAULT_MAX_INFLATED = 64 * 1024 * 1024
"""The largest size, in bytes, a compressed term may declare and inflate to."""

_CACHE_LIMIT = 65536

_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from
_i32 = struct.Struct(">i").unpack_from
_u64 = struct.Struct(">Q").unpack_from
_f64 = struct.Struct(">d").unpack_from
_3u32 = struct.Struct(">III").unpack_from

_TAG_NAMES = {value: name for name, value in vars(T).items() if name.isupper()}


def _hashable(term: Any) -> bool:
    try:
        hash(term)
    except TypeError:
        return False
    return True


def _truncated(pos: int, what: str) -> DecodeError:
    return DecodeError(f"input ends inside {what}", pos)


class Decoder:
    """Decodes external terms. One instance may be reused; it keeps caches of what recurs.

    Options:

    - ``strings``: decode binaries that are valid UTF-8 to ``str`` (others stay ``bytes``).
      Off by default: a binary is ``bytes`` unless you ask.
    - ``none``: the atom that decodes to ``None``, ``"nil"`` (Elixir, the default) or
      ``"undefined"`` (Erlang). The other one stays an :class:`Atom`.
    - ``max_depth``: the deepest nesting of containers accepted.
    - ``max_inflated``: the largest uncompressed size a compressed term may declare.
    """

    def __init__(self, *, strings: bool = False, none: str = "nil",
                 max_depth: int = DEFAULT_MAX_DEPTH,
                 max_inflated: int = DEFAULT_MAX_INFLATED) -> None:
        if none not in ("nil", "undefined"):
            raise ValueError(f"none must be 'nil' or 'undefined', not {none!r}")
        self.strings = strings
        self.none = none
        self.max_depth = max_depth
        self.max_inflated = max_inflated
        specials: dict[str, Any] = {"true": True, "false": False, none: None}
        self._specials = specials
        self._term = self._build()

    def decode(self, data: bytes | bytearray | memoryview) -> Any:
        """Decode one whole term (starting with the version byte 131); nothing may follow."""
        if type(data) is bytes and len(data) > 2 and data[0] == T.VERSION \
                and data[1] != T.COMPRESSED:
            try:  # the common case, without decode_from's conversions
                term, end = self._term(data, 1, 0)
            except RecursionError:
                raise DecodeError("term nests too deeply for the Python stack", 1) from None
        else:
            term, end = self.decode_from(data)
        if end != len(data):
            extra = len(data) - end
            raise DecodeError(
                f"{extra} unexpected byte{'s' if extra != 1 else ''} after the term", end)
        return term

    def decode_from(self, data: bytes | bytearray | memoryview, offset: int = 0
                    ) -> tuple[Any, int]:
        """Decode the term that starts at ``offset``; return it and the offset after it.

        Frames of the distribution protocol carry two terms back to back: decode the first,
        then call again from the returned offset.
        """
        if type(data) is not bytes:
            data = memoryview(data).toreadonly() if not isinstance(data, memoryview) \
                else data.toreadonly()
            if data.format != "B" or data.ndim != 1:
                data = data.cast("B")
        end = len(data)
        if offset >= end:
            raise DecodeError("expected a term, found the end of the input", offset)
        if data[offset] != T.VERSION:
            raise DecodeError(
                f"expected the version byte 131, found {data[offset]}", offset)
        pos = offset + 1
        if pos < end and data[pos] == T.COMPRESSED:
            return self._decompress(data, pos)
        try:
            return self._term(data, pos, 0)
        except RecursionError:
            raise DecodeError("term nests too deeply for the Python stack", pos) from None

    def _decompress(self, data: Any, pos: int) -> tuple[Any, int]:
        if pos + 5 > len(data):
            raise _truncated(pos, "a compressed term's size")
        (size,) = _u32(data, pos + 1)
        if size > self.max_inflated:
            raise DecodeError(
                f"compressed term declares {size} bytes, more than the limit of "
                f"{self.max_inflated} (raise max_inflated to accept it)", pos)
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
            term, inner_end = self._term(inflated, 0, 0)
        except DecodeError as exc:
            raise DecodeError(f"inside the compressed term: {exc}", pos + 5) from None
        except RecursionError:
            raise DecodeError("term nests too deeply for the Python stack", pos) from None
        if inner_end != size:
            raise DecodeError("compressed term has trailing bytes", pos + 5)
        return term, consumed

    def _build(self) -> Any:
        """Make the recursive decoding function, with its caches and options as locals."""
        specials = self._specials
        strings = self.strings
        max_depth = self.max_depth
        utf8_atoms: dict[Any, Any] = {}
        latin1_atoms: dict[Any, Any] = {}
        pids: dict[Any, Pid] = {}
        u16, u32, i32, u64, f64, u3 = _u16, _u32, _i32, _u64, _f64, _3u32
        missing = object()
        id_words = [None] + [struct.Struct(f">{n}I").unpack_from for n in range(1, 6)]

        def atom_value(raw: Any, latin1: bool, pos: int) -> Any:
            cache = latin1_atoms if latin1 else utf8_atoms
            raw = bytes(raw)
            value = cache.get(raw)
            if value is None and raw not in cache:
                try:
                    text = bytes(raw).decode("latin-1" if latin1 else "utf-8")
                except UnicodeDecodeError:
                    raise DecodeError("atom text is not valid UTF-8", pos) from None
                value = specials[text] if text in specials else Atom(text)
                if len(cache) < _CACHE_LIMIT:
                    cache[raw] = value
            return value

        def atom_at(data: Any, pos: int, what: str) -> tuple[Any, int]:
            """An atom where the format requires one (a pid's node, a fun's module)."""
            value, pos = term(data, pos, max_depth)
            if type(value) is not Atom:
                if value is None or value is True or value is False:
                    value = Atom(self.none if value is None else str(value).lower())
                else:
                    raise DecodeError(f"expected an atom for {what}", pos)
            return value, pos

        def binary(data: Any, pos: int, size: int) -> Any:
            value = bytes(data[pos:pos + size])
            if strings:
                try:
                    return value.decode("utf-8")
                except UnicodeDecodeError:
                    return value
            return value

        def keep_form(value: Any, data: Any, start: int, stop: int) -> Any:
            """Remember how an identifier was written (NEW_PORT_EXT or V4_PORT_EXT, old
            8-bit creations…), so that it is re-encoded exactly as it came."""
            object.__setattr__(value, "_ext", bytes(data[start:stop]))
            return value

        def refused(container: str, too_long: bool, pos: int) -> DecodeError:
            """Why a container cannot be read: its declared size, or the nesting bound."""
            if too_long:
                return DecodeError(f"{container} cannot fit in the input", pos)
            return DecodeError(f"terms nest deeper than max_depth={max_depth}", pos)

        def need(data: Any, pos: int, size: int, what: str) -> None:
            if pos + size > len(data):
                raise _truncated(pos, what)

        def elements(data: Any, pos: int, count: int, depth: int) -> tuple[list[Any], int]:
            """``count`` terms in a row (a tuple's, a list's or a map's), with the leaves that
            make up most traffic (small integers, cached atoms and pids, binaries) read here
            rather than by a call each."""
            end = len(data)
            items: list[Any] = []
            append = items.append
            for _ in range(count):
                if pos + 1 < end:
                    tag = data[pos]
                    if tag == 97:
                        append(data[pos + 1])
                        pos += 2
                        continue
                    if tag == 119:
                        stop = pos + 2 + data[pos + 1]
                        raw = data[pos + 2:stop]
                        if type(raw) is not bytes:
                            raw = bytes(raw)
                        value = utf8_atoms.get(raw, missing)
                        if value is not missing and stop <= end:
                            append(value)
                            pos = stop
                            continue
                    elif tag == 109 and pos + 5 <= end:
                        (size,) = u32(data, pos + 1)
                        stop = pos + 5 + size
                        if stop <= end:
                            append(binary(data, pos + 5, size))
                            pos = stop
                            continue
                    elif tag == 104:  # a small tuple inside: straight into its elements
                        arity = data[pos + 1]
                        if arity <= end - pos - 2 and depth < max_depth:
                            inner, pos = elements(data, pos + 2, arity, depth + 1)
                            append(tuple(inner))
                            continue
                    elif tag == 88 and data[pos + 1] == 119 and pos + 2 < end:
                        stop = pos + 15 + data[pos + 2]
                        raw = data[pos:stop]
                        if type(raw) is not bytes:
                            raw = bytes(raw)
                        value = pids.get(raw)
                        if value is not None:
                            append(value)
                            pos = stop
                            continue
                value, pos = term(data, pos, depth)
                append(value)
            return items, pos

        def term(data: Any, pos: int, depth: int) -> tuple[Any, int]:
            end = len(data)
            if pos >= end:
                raise _truncated(pos, "a term (expected a tag byte)")
            tag = data[pos]
            pos += 1
            if tag == 119:  # SMALL_ATOM_UTF8_EXT
                if pos >= end:
                    raise _truncated(pos, "an atom's length")
                stop = pos + 1 + data[pos]
                if stop > end:
                    raise _truncated(pos, "an atom")
                raw = data[pos + 1:stop]
                if type(raw) is not bytes:  # never keep views of the caller's buffer
                    raw = bytes(raw)
                value = utf8_atoms.get(raw)
                if value is None and raw not in utf8_atoms:
                    value = atom_value(raw, False, pos)
                return value, stop
            if tag == 97:  # SMALL_INTEGER_EXT
                if pos >= end:
                    raise _truncated(pos, "a small integer")
                return data[pos], pos + 1
            if tag == 104 or tag == 105:  # SMALL_TUPLE_EXT, LARGE_TUPLE_EXT
                if tag == 104:
                    if pos >= end:
                        raise _truncated(pos, "a tuple's arity")
                    arity = data[pos]
                    pos += 1
                else:
                    need(data, pos, 4, "a tuple's arity")
                    (arity,) = u32(data, pos)
                    pos += 4
                if arity > end - pos or depth >= max_depth:
                    raise refused(f"tuple of arity {arity}", arity > end - pos, pos)
                items, pos = elements(data, pos, arity, depth + 1)
                return tuple(items), pos
            if tag == 109:  # BINARY_EXT
                need(data, pos, 4, "a binary's length")
                (size,) = u32(data, pos)
                pos += 4
                if size > end - pos:
                    raise DecodeError(
                        f"binary declares {size} bytes but only {end - pos} remain", pos)
                return binary(data, pos, size), pos + size
            if tag == 88:  # NEW_PID_EXT
                # Look the whole pid up by its bytes before decoding anything: the same few
                # pids recur on every message.
                if pos + 2 < end and data[pos] == 119:
                    stop = pos + 14 + data[pos + 1]
                    raw = data[pos - 1:stop]
                    if type(raw) is not bytes:
                        raw = bytes(raw)
                    pid = pids.get(raw)
                    if pid is not None:
                        return pid, stop
                start = pos - 1
                node, pos = atom_at(data, pos, "a pid's node")
                need(data, pos, 12, "a pid")
                raw = data[start:pos + 12]
                if type(raw) is not bytes:
                    raw = bytes(raw)
                pid = Pid(node, *u3(data, pos))
                if len(pids) >= _CACHE_LIMIT:
                    pids.clear()
                pids[raw] = pid
                return pid, pos + 12
            if tag == 108:  # LIST_EXT
                need(data, pos, 4, "a list's length")
                (length,) = u32(data, pos)
                pos += 4
                if length > end - pos or depth >= max_depth:
                    raise refused(f"list of {length} elements", length > end - pos, pos)
                depth += 1
                if length >= 8:
                    stop = pos + 2 * length
                    tags = bytes(data[pos:stop:2])
                    if tags.count(97) == length:  # all small integers: take them at C speed
                        items = list(data[pos + 1:stop:2])
                        pos = stop
                        if pos < end and data[pos] == 106:
                            return items, pos + 1
                        tail, pos = term(data, pos, depth)
                        return ImproperList(items, tail), pos
                items, pos = elements(data, pos, length, depth)
                if pos < end and data[pos] == 106:
                    return items, pos + 1
                tail, pos = term(data, pos, depth)
                if not items:
                    raise DecodeError("a list of length 0 must be written as NIL_EXT", pos)
                return ImproperList(items, tail), pos
            if tag == 106:  # NIL_EXT
                return [], pos
            if tag == 116:  # MAP_EXT
                need(data, pos, 4, "a map's arity")
                (arity,) = u32(data, pos)
                pos += 4
                if arity > (end - pos) // 2 or depth >= max_depth:
                    raise refused(f"map of {arity} pairs", arity > (end - pos) // 2, pos)
                depth += 1
                items, pos = elements(data, pos, 2 * arity, depth)
                try:
                    result = dict(zip(items[::2], items[1::2], strict=True))
                except TypeError:  # keys that are lists or maps: their frozen forms
                    result = {}
                    for key, value in zip(items[::2], items[1::2], strict=True):
                        try:
                            result[key] = value
                        except TypeError:
                            result[freeze(key)] = value
                if len(result) != arity:
                    # Keys Python merges (1 and 1.0, true and 1) are distinct in Erlang.
                    return MapPairs(
                        (key if _hashable(key) else freeze(key), value)
                        for key, value in zip(items[::2], items[1::2], strict=True)), pos
                return result, pos
            if tag == 98:  # INTEGER_EXT
                need(data, pos, 4, "an integer")
                return i32(data, pos)[0], pos + 4
            if tag == 90 and pos + 4 < end and data[pos + 2] == 119:
                # NEWER_REFERENCE_EXT with a cached node atom: the common case, kept short.
                (words,) = u16(data, pos)
                node_stop = pos + 4 + data[pos + 3]
                raw = data[pos + 4:node_stop]
                if type(raw) is not bytes:
                    raw = bytes(raw)
                node = utf8_atoms.get(raw)
                stop = node_stop + 4 + 4 * words
                if type(node) is Atom and 1 <= words <= 5 and stop <= end:
                    return Reference(node, u32(data, node_stop)[0],
                                     id_words[words](data, node_stop + 4)), stop
            if tag == 90 or tag == 114:  # NEWER_REFERENCE_EXT, NEW_REFERENCE_EXT
                start = pos - 1
                need(data, pos, 2, "a reference's length")
                (words,) = u16(data, pos)
                if not 1 <= words <= 5:
                    raise DecodeError(f"a reference has 1 to 5 id words, not {words}", pos)
                node, pos = atom_at(data, pos + 2, "a reference's node")
                if tag == 90:
                    need(data, pos, 4 + 4 * words, "a reference")
                    (creation,) = u32(data, pos)
                    pos += 4
                else:
                    need(data, pos, 1 + 4 * words, "a reference")
                    creation = data[pos]
                    pos += 1
                ids = id_words[words](data, pos)
                pos += 4 * words
                ref = Reference(node, creation, ids)
                return (ref if tag == 90 else keep_form(ref, data, start, pos)), pos
            if tag == 70:  # NEW_FLOAT_EXT
                need(data, pos, 8, "a float")
                return f64(data, pos)[0], pos + 8
            if tag == 107:  # STRING_EXT
                need(data, pos, 2, "a charlist's length")
                (size,) = u16(data, pos)
                pos += 2
                need(data, pos, size, "a charlist")
                return Charlist(data[pos:pos + size]), pos + size
            if tag == 110 or tag == 111:  # SMALL_BIG_EXT, LARGE_BIG_EXT
                if tag == 110:
                    need(data, pos, 2, "a big integer's header")
                    size = data[pos]
                    pos += 1
                else:
                    need(data, pos, 5, "a big integer's header")
                    (size,) = u32(data, pos)
                    pos += 4
                sign = data[pos]
                pos += 1
                if size > end - pos:
                    raise DecodeError(
                        f"big integer declares {size} bytes but only {end - pos} remain", pos)
                value = int.from_bytes(data[pos:pos + size], "little")
                return (-value if sign else value), pos + size
            if tag == 118 or tag == 100 or tag == 115:  # ATOM_UTF8, ATOM (latin-1), SMALL_ATOM
                if tag == 115:
                    need(data, pos, 1, "an atom's length")
                    size = data[pos]
                    pos += 1
                else:
                    need(data, pos, 2, "an atom's length")
                    (size,) = u16(data, pos)
                    pos += 2
                need(data, pos, size, "an atom")
                return atom_value(data[pos:pos + size], tag != 118, pos), pos + size
            if tag == 77:  # BIT_BINARY_EXT
                need(data, pos, 5, "a bitstring's header")
                (size,) = u32(data, pos)
                bits = data[pos + 4]
                pos += 5
                if size > end - pos:
                    raise DecodeError(
                        f"bitstring declares {size} bytes but only {end - pos} remain", pos)
                if size == 0 or not 1 <= bits <= 8:
                    raise DecodeError(f"bitstring of {size} bytes cannot have {bits} bits", pos)
                return BitBinary(data[pos:pos + size], bits), pos + size
            if tag == 120 or tag == 89 or tag == 102:  # V4_PORT_EXT, NEW_PORT_EXT, PORT_EXT
                start = pos - 1
                node, pos = atom_at(data, pos, "a port's node")
                if tag == 120:
                    need(data, pos, 12, "a port")
                    (port_id,) = u64(data, pos)
                    (creation,) = u32(data, pos + 8)
                    size = 12
                elif tag == 89:
                    need(data, pos, 8, "a port")
                    port_id, creation = struct.unpack_from(">II", data, pos)
                    size = 8
                else:
                    need(data, pos, 5, "a port")
                    port_id, creation, size = u32(data, pos)[0], data[pos + 4], 5
                port = Port(node, port_id, creation)
                return keep_form(port, data, start, pos + size), pos + size
            if tag == 101:  # REFERENCE_EXT (the oldest form: one id word, 8-bit creation)
                start = pos - 1
                node, pos = atom_at(data, pos, "a reference's node")
                need(data, pos, 5, "a reference")
                ref = Reference(node, data[pos + 4], (u32(data, pos)[0],))
                return keep_form(ref, data, start, pos + 5), pos + 5
            if tag == 103:  # PID_EXT (pre-OTP 23)
                start = pos - 1
                node, pos = atom_at(data, pos, "a pid's node")
                need(data, pos, 9, "a pid")
                pid_id, serial = struct.unpack_from(">II", data, pos)
                pid = Pid(node, pid_id, serial, data[pos + 8])
                return keep_form(pid, data, start, pos + 9), pos + 9
            if tag == 113:  # EXPORT_EXT
                module, pos = atom_at(data, pos, "an export fun's module")
                function, pos = atom_at(data, pos, "an export fun's function")
                arity, pos = term(data, pos, depth)
                if type(arity) is not int:
                    raise DecodeError("expected an integer arity in an export fun", pos)
                return ExportFun(module, function, arity), pos
            if tag == 112:  # NEW_FUN_EXT
                start = pos - 1
                need(data, pos, 29, "a fun's header")
                (size,) = u32(data, pos)
                if size < 29 or size > end - pos:
                    raise DecodeError(f"fun declares {size} bytes, which the input lacks", pos)
                arity = data[pos + 4]
                uniq = bytes(data[pos + 5:pos + 21])
                index, free_count = struct.unpack_from(">II", data, pos + 21)
                if depth >= max_depth:
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
                return Fun(module, arity, index, uniq, pid, tuple(free),
                           bytes(data[start:pos])), pos
            if tag == 99:  # FLOAT_EXT (old text form)
                need(data, pos, 31, "a float")
                text = bytes(data[pos:pos + 31]).split(b"\0", 1)[0]
                try:
                    return float(text), pos + 31
                except ValueError:
                    raise DecodeError(f"bad float text {text!r}", pos) from None
            name = _TAG_NAMES.get(tag)
            if name is not None:
                raise DecodeError(
                    f"tag {tag} ({name}) is not accepted here: it is internal to the BEAM or "
                    f"needs a negotiated feature pybroadway does not use", pos - 1)
            raise DecodeError(f"unknown term tag {tag}", pos - 1)

        return term


_default = Decoder()
_default_decode = _default.decode


def decode(data: bytes | bytearray | memoryview, **options: Any) -> Any:
    """Decode one external term (version byte included); nothing may follow it.

    Options are those of :class:`Decoder`; without options a shared decoder is used.
    """
    if options:
        return Decoder(**options).decode(data)
    return _default_decode(data)


def decode_from(data: bytes | bytearray | memoryview, offset: int = 0, **options: Any
                ) -> tuple[Any, int]:
    """Decode the term at ``offset``; return ``(term, offset_after_it)``."""
    decoder = Decoder(**options) if options else _default
    return decoder.decode_from(data, offset)
