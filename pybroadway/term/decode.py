"""Decoding the external term format.

Speed matters here: every frame a peer sends passes through :class:`Decoder`. The decoder
works on ``bytes`` or a read-only ``memoryview`` without copying the input, caches what recurs
(atoms, pids) keyed by their raw bytes, decodes leaves inline in container loops, and checks
every declared length against the input before using it, so hostile input fails at once with a
:class:`DecodeError` instead of allocating or recursing without bound. The tags that seldom
travel (funs, ports, old identifier forms, big integers…) are read by
:mod:`pybroadway.term._decode_rare`, out of this loop's way.

Containers nested deeper than :data:`~pybroadway.term._reading.RECURSION_DEPTH` are handed to
:mod:`pybroadway.term._decode_deep`, which reads them with an explicit stack: any depth a BEAM
writes decodes, bounded by the input's size rather than by the stack.

When the compiled accelerator is built (:mod:`pybroadway.term._impl`), each Decoder hands its
work to its compiled twin, which gives the same values and the same errors; this module's code
is then the reference, and reads the rare tags for both.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pybroadway.errors import ArgumentError
from pybroadway.term import _impl, _reading
from pybroadway.term import tags as T
from pybroadway.term._decode_deep import deep_reader
from pybroadway.term._decode_rare import inflate, rare_reader
from pybroadway.term._reading import RECURSION_DEPTH, TermReader, map_from_items, truncated
from pybroadway.term.errors import DecodeError
from pybroadway.term.types import Atom, Charlist, ImproperList, Pid, Reference

DEFAULT_MAX_DEPTH = None
"""No bound on how deeply containers nest, as on the BEAM: what a term may hold is bounded by
its size (every container takes at least two bytes of it), and decoding it by an explicit
stack on the heap."""

DEFAULT_MAX_INFLATED = 64 * 1024 * 1024
"""The largest size, in bytes, a compressed term may declare and inflate to."""

_CACHE_LIMIT = 65536


class Decoder:
    """Decodes external terms. One instance may be reused; it keeps caches of what recurs.

    Options:

    - ``strings``: decode binaries that are valid UTF-8 to ``str`` (others stay ``bytes``).
      Off by default: a binary is ``bytes`` unless you ask.
    - ``none``: the atom that decodes to ``None``, ``"nil"`` (Elixir, the default) or
      ``"undefined"`` (Erlang). The other one stays an :class:`Atom`.
    - ``max_depth``: the deepest nesting of containers accepted; None (the default) accepts
      any, as the BEAM does.
    - ``max_inflated``: the largest uncompressed size a compressed term may declare.
    - ``max_inflate_ratio``: if set, a compressed term may also declare at most this many
      times its compressed size (and 64 KiB in any case), so that what it costs to decode
      stays in proportion to the bytes received; None (the default) sets no ratio.
    """

    def __init__(self, *, strings: bool = False, none: str = "nil",
                 max_depth: int | None = DEFAULT_MAX_DEPTH,
                 max_inflated: int = DEFAULT_MAX_INFLATED,
                 max_inflate_ratio: int | None = None) -> None:
        if none not in ("nil", "undefined"):
            raise ArgumentError(f"none must be 'nil' or 'undefined', not {none!r}")
        self.strings = strings
        self.none = none
        self.max_depth = max_depth
        self.max_inflated = max_inflated
        self.max_inflate_ratio = max_inflate_ratio
        specials: dict[str, Any] = {"true": True, "false": False, none: None}
        self._specials = specials
        self._term = self._build()
        native = _impl.active
        if native is not None:  # the compiled twin of _term, decode and decode_from
            core = native.Decoder(strings, none, self._recursion_depth, self._rare,
                                  self._deep, partial(Decoder.decode, self),
                                  partial(Decoder.decode_from, self))
            self._term = core.term
            self.decode = core.decode  # type: ignore[method-assign]
            self.decode_from = core.decode_from  # type: ignore[method-assign]
            self.decode_records = core.decode_records  # type: ignore[method-assign]

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
            return inflate(self._term, data, pos, self.max_inflated, self.max_inflate_ratio)
        try:
            return self._term(data, pos, 0)
        except RecursionError:
            raise DecodeError("term nests too deeply for the Python stack", pos) from None

    def decode_records(self, data: bytes | bytearray, pos: int, end: int, prefix: bytes,
                       largest: int) -> tuple[list[Any], int]:
        """The terms of the records that lie whole in ``data[pos:end]``, one after another,
        and the offset where the first record not taken starts.

        A record is a 4-byte big-endian length and that many bytes: ``prefix``, then one term
        with its version byte (the frames of a distribution connection that repeat one
        control message are such records). Records of length 0 are skipped. Reading stops at
        the first record that does not start with ``prefix``, is longer than ``largest``,
        holds a compressed term, or does not decode to exactly its length: the caller reads
        that one its own way, which says what is wrong with it.
        """
        if pos < 0 or pos > end or end > len(data):
            raise ValueError(f"pos {pos} and end {end} do not fit {len(data)} bytes")
        terms: list[Any] = []
        head = len(prefix)
        view = memoryview(data).toreadonly()
        while end - pos >= 4:
            size = int.from_bytes(view[pos:pos + 4], "big")
            if not size:
                pos += 4
                continue
            stop = pos + 4 + size
            at = pos + 4 + head
            if size > largest or stop > end or at + 2 > stop or view[at] != T.VERSION \
                    or view[at + 1] == T.COMPRESSED or view[pos + 4:at] != prefix:
                break
            try:
                term, at = self._term(view[:stop], at + 1, 0)
            except (DecodeError, RecursionError):
                break
            if at != stop:
                break
            terms.append(term)
            pos = stop
        return terms, pos

    def _build(self) -> TermReader:
        """Make the recursive decoding function, with its caches and options as locals."""
        specials = self._specials
        strings = self.strings
        max_depth = self.max_depth
        # Containers nested this deep or more go to the iterative reader (which also refuses
        # those past max_depth).
        limit = RECURSION_DEPTH if max_depth is None else min(RECURSION_DEPTH, max_depth)
        self._recursion_depth = limit
        handoffs = [0]  # calls of the iterative reader so far
        utf8_atoms: dict[Any, Any] = {}
        latin1_atoms: dict[Any, Any] = {}
        pids: dict[Any, Pid] = {}
        u16, u32, i32, f64, u3 = (
            _reading.u16, _reading.u32, _reading.i32, _reading.f64, _reading.three_u32)
        need = _reading.need
        id_words = _reading.ID_WORDS
        missing = object()

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
            if pos < len(data) and data[pos] not in _ATOM_TAGS:  # nothing nests in a node
                raise DecodeError(f"expected an atom for {what}", pos)
            value, pos = term(data, pos, 0)
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

        def too_long(container: str, pos: int) -> DecodeError:
            return DecodeError(f"{container} cannot fit in the input", pos)

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
                        if arity <= end - pos - 2 and depth < limit:
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
                raise truncated(pos, "a term (expected a tag byte)")
            tag = data[pos]
            pos += 1
            if tag == 119:  # SMALL_ATOM_UTF8_EXT
                if pos >= end:
                    raise truncated(pos, "an atom's length")
                stop = pos + 1 + data[pos]
                if stop > end:
                    raise truncated(pos, "an atom")
                raw = data[pos + 1:stop]
                if type(raw) is not bytes:  # never keep views of the caller's buffer
                    raw = bytes(raw)
                value = utf8_atoms.get(raw)
                if value is None and raw not in utf8_atoms:
                    value = atom_value(raw, False, pos)
                return value, stop
            if tag == 97:  # SMALL_INTEGER_EXT
                if pos >= end:
                    raise truncated(pos, "a small integer")
                return data[pos], pos + 1
            if tag == 104 or tag == 105:  # SMALL_TUPLE_EXT, LARGE_TUPLE_EXT
                if depth >= limit:
                    return deep(data, pos - 1, depth)
                if tag == 104:
                    if pos >= end:
                        raise truncated(pos, "a tuple's arity")
                    arity = data[pos]
                    pos += 1
                else:
                    need(data, pos, 4, "a tuple's arity")
                    (arity,) = u32(data, pos)
                    pos += 4
                if arity > end - pos:
                    raise too_long(f"tuple of arity {arity}", pos)
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
                if depth >= limit:
                    return deep(data, pos - 1, depth)
                need(data, pos, 4, "a list's length")
                (length,) = u32(data, pos)
                pos += 4
                if length > end - pos:
                    raise too_long(f"list of {length} elements", pos)
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
                if depth >= limit:
                    return deep(data, pos - 1, depth)
                need(data, pos, 4, "a map's arity")
                (arity,) = u32(data, pos)
                pos += 4
                if arity > (end - pos) // 2:
                    raise too_long(f"map of {arity} pairs", pos)
                handed_off = handoffs[0]
                items, pos = elements(data, pos, 2 * arity, depth + 1)
                if handoffs[0] != handed_off:  # a key may nest too deeply to hash
                    return map_from_items(items, arity), pos
                try:
                    result = dict(zip(items[::2], items[1::2], strict=True))
                except TypeError:  # keys that are lists or maps
                    return map_from_items(items, arity), pos
                if len(result) != arity:  # keys Python merges (1 and 1.0, true and 1)
                    return map_from_items(items, arity), pos
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
            if tag == 70:  # NEW_FLOAT_EXT
                need(data, pos, 8, "a float")
                return f64(data, pos)[0], pos + 8
            if tag == 107:  # STRING_EXT
                need(data, pos, 2, "a charlist's length")
                (size,) = u16(data, pos)
                pos += 2
                need(data, pos, size, "a charlist")
                return Charlist(data[pos:pos + size]), pos + size
            return rare(data, pos, tag, depth)

        rare = rare_reader(term, atom_at, atom_value, max_depth)
        deep = deep_reader(term, max_depth, handoffs)
        self._rare = rare
        self._deep = deep
        return term


_ATOM_TAGS = frozenset((T.SMALL_ATOM_UTF8_EXT, T.ATOM_UTF8_EXT, T.ATOM_EXT, T.SMALL_ATOM_EXT))

_default = Decoder()
_default_decode = _default.decode


def _remake_default() -> None:
    """Make the shared decoder again, with the implementation now active."""
    global _default, _default_decode
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
