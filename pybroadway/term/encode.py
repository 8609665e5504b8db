"""Encoding Python values to the external term format.

The mapping (Elixir-friendly): ``str`` and ``bytes`` → binary, ``int`` → integer of any size,
``float`` → float, ``tuple`` → tuple, ``list`` → list, ``dict`` → map, ``True``/``False`` →
``true``/``false``, ``None`` → ``nil`` (or ``undefined``), and the types of
:mod:`pybroadway.term.types` to their own tags. Atoms, pids, references and ports remember their
encoding after the first use, so the terms that recur on every message cost a lookup.

Containers nested deeper than :data:`~pybroadway.term._reading.RECURSION_DEPTH` are written by
:mod:`pybroadway.term._encode_deep` with an explicit stack, so any depth encodes, as on the BEAM.

When the compiled accelerator is built (:mod:`pybroadway.term._impl`), each Encoder hands the
common types to its compiled twin, which writes the same bytes and asks this module's code for
everything else (and for the deep containers).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from pybroadway.errors import ArgumentError
from pybroadway.term import _impl
from pybroadway.term import tags as T
from pybroadway.term._encode_deep import deep_writer
from pybroadway.term._reading import RECURSION_DEPTH
from pybroadway.term.errors import EncodeError
from pybroadway.term.types import (
    Atom,
    BitBinary,
    Charlist,
    ExportFun,
    FrozenList,
    FrozenMap,
    Fun,
    ImproperList,
    MapPairs,
    Pid,
    Port,
    Reference,
)

_u16 = struct.Struct(">H").pack
_u32 = struct.Struct(">I").pack
_i32 = struct.Struct(">i").pack
_f64 = struct.Struct(">d").pack
_pid_tail = struct.Struct(">III").pack
_setattr = object.__setattr__

LARGE_BINARY = 64 * 1024
"""A ``bytes`` of at least this size is left out of the output when the caller of
:meth:`Encoder.encode_into` collects such binaries (``apart``) to write them itself."""


class _Remembering(Protocol):
    _ext: bytes  # a slot, empty until the first encoding


_R = TypeVar("_R", bound=_Remembering)


def _remembered(build: Callable[[_R], bytes]) -> Callable[[_R], bytes]:
    """Make ``build`` run once per value: its result is kept in the value's ``_ext`` slot."""
    def ext(value: _R) -> bytes:
        try:
            return value._ext
        except AttributeError:
            result = build(value)
            _setattr(value, "_ext", result)
            return result
    ext.__doc__ = build.__doc__
    ext.__name__ = build.__name__
    return ext


@_remembered
def atom_ext(atom: Atom) -> bytes:
    """The external form of ``atom`` (without the version byte), computed once per atom."""
    name = atom.name
    if len(name) > 255:
        raise EncodeError(f"atom {name[:40]!r}… has {len(name)} characters; the BEAM allows 255")
    raw = name.encode("utf-8")
    if len(raw) < 256:
        return bytes((T.SMALL_ATOM_UTF8_EXT, len(raw))) + raw
    return bytes((T.ATOM_UTF8_EXT,)) + _u16(len(raw)) + raw


@_remembered
def pid_ext(pid: Pid) -> bytes:
    """The external form of ``pid`` (NEW_PID_EXT), computed once per pid."""
    return (bytes((T.NEW_PID_EXT,)) + atom_ext(pid.node)
            + _pid_tail(pid.id, pid.serial, pid.creation))


@_remembered
def reference_ext(ref: Reference) -> bytes:
    """The external form of ``ref`` (NEWER_REFERENCE_EXT), computed once per reference."""
    return (bytes((T.NEWER_REFERENCE_EXT,)) + _u16(len(ref.ids)) + atom_ext(ref.node)
            + _u32(ref.creation) + struct.pack(f">{len(ref.ids)}I", *ref.ids))


@_remembered
def port_ext(port: Port) -> bytes:
    """NEW_PORT_EXT when the id fits 32 bits (what the BEAM writes), else V4_PORT_EXT."""
    if port.id < 1 << 32:
        return (bytes((T.NEW_PORT_EXT,)) + atom_ext(port.node) + _u32(port.id)
                + _u32(port.creation))
    return (bytes((T.V4_PORT_EXT,)) + atom_ext(port.node) + struct.pack(">Q", port.id)
            + _u32(port.creation))


def _integer(value: int, out: bytearray) -> None:
    if 0 <= value <= 255:
        out.append(T.SMALL_INTEGER_EXT)
        out.append(value)
    elif -0x80000000 <= value <= 0x7FFFFFFF:
        out.append(T.INTEGER_EXT)
        out += _i32(value)
    else:
        magnitude = -value if value < 0 else value
        size = (magnitude.bit_length() + 7) // 8
        if size < 256:
            out += bytes((T.SMALL_BIG_EXT, size, value < 0))
        else:
            out.append(T.LARGE_BIG_EXT)
            out += _u32(size)
            out.append(value < 0)
        out += magnitude.to_bytes(size, "little")


def _float(value: float, out: bytearray) -> None:
    if not math.isfinite(value):
        raise EncodeError(f"{value} has no Erlang form: the BEAM's floats are finite")
    out.append(T.NEW_FLOAT_EXT)
    out += _f64(value)


def _binary(value: bytes | bytearray | memoryview, out: bytearray) -> None:
    out.append(T.BINARY_EXT)
    out += _u32(len(value))
    out += value


class Encoder:
    """Encodes Python values to external terms.

    - ``none``: the atom ``None`` becomes, ``"nil"`` (Elixir, the default) or ``"undefined"``.
    - ``compressed``: ``False``, ``True`` (zlib level 6) or a level 1 to 9. As with
      ``term_to_binary(T, [compressed])``, the compressed form is used only when smaller.
    """

    def __init__(self, *, none: str = "nil", compressed: bool | int = False) -> None:
        if none not in ("nil", "undefined"):
            raise ArgumentError(f"none must be 'nil' or 'undefined', not {none!r}")
        if compressed is True:
            compressed = 6
        if compressed is not False and not 1 <= compressed <= 9:
            raise ArgumentError(f"compressed must be a bool or a zlib level 1-9, not {compressed}")
        self.none = none
        self.compressed = compressed
        self._write = self._build()
        native = _impl.active
        if native is not None:  # the compiled twin; what it does not know, it asks _build's
            core = native.Encoder(atom_ext(Atom(none)), atom_ext(Atom("true")),
                                  atom_ext(Atom("false")), self._write, self._deep,
                                  RECURSION_DEPTH, atom_ext, pid_ext, reference_ext,
                                  LARGE_BINARY)
            self._write = core.write
            self._write_apart = core.write
            if compressed is False:
                self.encode = core.encode  # type: ignore[method-assign]

    def encode(self, term: Any) -> bytes:
        """Return ``term`` in external format, starting with the version byte 131."""
        out = bytearray()
        self.encode_into(out, term)
        return bytes(out)

    def encode_into(self, out: bytearray, term: Any,
                    apart: list[tuple[int, bytes]] | None = None) -> None:
        """Append ``term`` in external format (version byte included) to ``out``.

        With a list ``apart`` (and no compression), each ``bytes`` of at least
        :data:`LARGE_BINARY` bytes in ``term`` is not copied: its tag and length are written,
        and ``(len(out) at that point, the bytes)`` appended to ``apart``, for the caller to
        put there. Mutable buffers (``bytearray``, ``memoryview``) are always copied: they
        could change before the caller writes them.
        """
        start = len(out)
        held = len(apart) if apart is not None else 0
        out.append(T.VERSION)
        try:
            if apart is None or self.compressed is not False:
                self._write(term, out)
            else:
                self._write_apart(term, out, apart)
        except RecursionError:  # from a deep stack already, or a subclass's own methods
            del out[start:]
            if apart is not None:
                del apart[held:]
            raise EncodeError("the value nests too deeply for the Python stack") from None
        except EncodeError:
            del out[start:]
            if apart is not None:
                del apart[held:]
            raise
        if self.compressed is not False:
            body = bytes(out[start + 1:])
            packed = zlib.compress(body, self.compressed)
            if len(packed) + 5 < len(body):
                del out[start + 1:]
                out.append(T.COMPRESSED)
                out += _u32(len(body))
                out += packed

    def _build(self) -> Callable[[Any, bytearray], None]:
        """Make the recursive writing function; it hands containers nested deeper than
        RECURSION_DEPTH to the iterative one (``self._deep``). Also makes
        ``self._write_apart(value, out, apart)``, the same leaving large binaries apart."""
        none_ext = atom_ext(Atom(self.none))
        true_ext = atom_ext(Atom("true"))
        false_ext = atom_ext(Atom("false"))
        u32 = _u32
        # Where write_apart collects large binaries, while it runs (None otherwise: write
        # called on its own, or by the compiled encoder with an output of its own, copies).
        collecting: list[list[tuple[int, bytes]] | None] = [None]

        def write_apart(value: Any, out: bytearray, apart: list[tuple[int, bytes]]) -> None:
            collecting[0] = apart
            try:
                write(value, out)
            finally:
                collecting[0] = None

        def write(value: Any, out: bytearray, depth: int = 0) -> None:
            kind = type(value)
            if kind is Atom:
                try:
                    out += value._ext
                except AttributeError:
                    out += atom_ext(value)
            elif kind is tuple:
                if depth >= RECURSION_DEPTH:
                    return deep(value, out)
                arity = len(value)
                if arity < 256:
                    out.append(T.SMALL_TUPLE_EXT)
                    out.append(arity)
                else:
                    out.append(T.LARGE_TUPLE_EXT)
                    out += u32(arity)
                depth += 1
                for item in value:
                    write(item, out, depth)
            elif kind is bytes or kind is str:
                if kind is str:
                    value = value.encode("utf-8")
                out.append(T.BINARY_EXT)
                out += u32(len(value))
                if len(value) >= LARGE_BINARY and collecting[0] is not None:
                    collecting[0].append((len(out), value))
                else:
                    out += value
            elif kind is int:
                _integer(value, out)
            elif kind is Pid:
                try:
                    out += value._ext
                except AttributeError:
                    out += pid_ext(value)
            elif kind is list or kind is FrozenList:
                if value:
                    if depth >= RECURSION_DEPTH:
                        return deep(value, out)
                    out.append(T.LIST_EXT)
                    out += u32(len(value))
                    depth += 1
                    for item in value:
                        write(item, out, depth)
                out.append(T.NIL_EXT)
            elif kind is dict or kind is FrozenMap or kind is MapPairs:
                if depth >= RECURSION_DEPTH:
                    return deep(value, out)
                out.append(T.MAP_EXT)
                out += u32(len(value))
                depth += 1
                for key, item in (value if kind is MapPairs else value.items()):
                    write(key, out, depth)
                    write(item, out, depth)
            elif value is None:
                out += none_ext
            elif value is True:
                out += true_ext
            elif value is False:
                out += false_ext
            elif kind is Reference:
                out += reference_ext(value)
            elif kind is float:
                _float(value, out)
            elif kind is ImproperList:
                if depth >= RECURSION_DEPTH:
                    return deep(value, out)
                out.append(T.LIST_EXT)
                out += u32(len(value.elements))
                depth += 1
                for item in value.elements:
                    write(item, out, depth)
                write(value.tail, out, depth)
            elif kind is Charlist:
                data = value.data
                if len(data) <= 0xFFFF:
                    out.append(T.STRING_EXT)
                    out += _u16(len(data))
                    out += data
                else:
                    write(list(data), out, depth)
            elif kind is BitBinary:
                out.append(T.BIT_BINARY_EXT)
                out += u32(len(value.data))
                out.append(value.bits)
                out += value.data
            elif kind is Port:
                out += port_ext(value)
            elif kind is ExportFun:
                out.append(T.EXPORT_EXT)
                out += atom_ext(value.module)
                out += atom_ext(value.function)
                _integer(value.arity, out)
            elif kind is Fun:
                out += value.encoded
            elif kind is bytearray or kind is memoryview:
                _binary(value, out)
            else:
                write_subclass(value, out, depth)

        def write_subclass(value: Any, out: bytearray, depth: int) -> None:
            """Subclasses of the built-in types (IntEnum, OrderedDict, …) by what they are."""
            if isinstance(value, bool):
                out += true_ext if value else false_ext
            elif isinstance(value, int):
                _integer(int(value), out)
            elif isinstance(value, float):
                _float(float(value), out)
            elif isinstance(value, str):
                _binary(str.encode(value, "utf-8"), out)
            elif isinstance(value, bytes | bytearray):
                _binary(value, out)
            elif isinstance(value, tuple):
                write(tuple(value), out, depth)
            elif isinstance(value, list):
                write(list(value), out, depth)
            elif isinstance(value, Mapping):
                write(dict(value), out, depth)
            else:
                raise EncodeError(
                    f"cannot encode {type(value).__name__} {_short(value)}: use str, bytes, "
                    "int, float, bool, None, tuple, list, dict or a pybroadway.term type")

        deep = deep_writer(write)
        self._deep = deep
        self._write_apart = write_apart
        return write


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_default = Encoder()
_default_encode = _default.encode


def _remake_default() -> None:
    """Make the shared encoder again, with the implementation now active."""
    global _default, _default_encode
    _default = Encoder()
    _default_encode = _default.encode


def encode(term: Any, *, compressed: bool | int = False, none: str = "nil") -> bytes:
    """Encode ``term`` to external format bytes (version byte 131 included).

    ``compressed=True`` (or a zlib level) compresses when that makes the result smaller.
    """
    if compressed is False and none == "nil":
        return _default_encode(term)
    return Encoder(none=none, compressed=compressed).encode(term)
