"""Python value types for the Erlang terms that have no natural Python counterpart.

Everything here is immutable and hashable, so any decoded term can be a map key.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

from pybroadway.errors import ArgumentError, ArgumentTypeError
from pybroadway.term._deep_tuple import tuple_hash

__all__ = [
    "Atom",
    "BitBinary",
    "Charlist",
    "ExportFun",
    "FrozenList",
    "FrozenMap",
    "Fun",
    "ImproperList",
    "MapPairs",
    "Pid",
    "Port",
    "Reference",
]


class _AtomRef(weakref.ref["Atom"]):
    """The interning table's weak reference to an atom, knowing the atom's name."""

    __slots__ = ("name",)
    name: str


# name -> a weak reference to the one Atom of that name. Weak, so that the table holds only
# the atoms something still uses: a peer sending a million distinct atoms costs nothing once
# they are gone (the BEAM's atom table, by contrast, never shrinks).
_atoms: dict[str, _AtomRef] = {}
# Taken to create an atom or drop a dead one (never to look one up), so that two threads
# interning the same name get the same object. Reentrant: the collector may drop a dead atom
# while this thread is creating one.
_atoms_lock = threading.RLock()


def _drop_atom(ref: _AtomRef) -> None:
    with _atoms_lock:
        if _atoms.get(ref.name) is ref:
            del _atoms[ref.name]


class Atom:
    """An Erlang atom, such as ``:ok`` or ``'global_name_server'``.

    Atoms are interned: ``Atom("ok") is Atom("ok")``, so comparing them is an identity check.
    An atom never equals a ``str``, because a ``str`` is sent as a binary. An atom nothing
    refers to any more is freed.
    """

    __slots__ = ("__weakref__", "_ext", "name")
    name: str
    _ext: bytes  # its external format, filled in by the encoder on first use

    def __new__(cls, name: str) -> Atom:
        ref = _atoms.get(name)
        if ref is not None:
            atom = ref()
            if atom is not None:
                return atom
        if not isinstance(name, str):
            raise ArgumentTypeError(f"an atom's name is a str, not {type(name).__name__}")
        with _atoms_lock:
            ref = _atoms.get(name)
            atom = ref() if ref is not None else None
            if atom is None:
                atom = object.__new__(cls)
                object.__setattr__(atom, "name", name)
                ref = _AtomRef(atom, _drop_atom)
                ref.name = name
                _atoms[name] = ref
        return atom

    @classmethod
    def existing(cls, name: str) -> Atom | None:
        """The atom named ``name`` if it exists already, else None; never creates one (what
        an unauthenticated peer names must not become an atom)."""
        ref = _atoms.get(name)
        return ref() if ref is not None else None

    @staticmethod
    def count() -> int:
        """How many atoms exist (the size of the interning table)."""
        return len(_atoms)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("Atom is immutable")

    def __reduce__(self) -> tuple[type[Atom], tuple[str]]:
        return Atom, (self.name,)

    def __repr__(self) -> str:
        return f"Atom({self.name!r})"

    def __str__(self) -> str:
        return self.name

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Atom):
            return NotImplemented
        return self.name < other.name


_set = object.__setattr__


class _Frozen:
    """Base of the small immutable records below: slots, equality and hash by ``_fields``."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _hash: int  # kept by _cached_hash, in the slots of the identifiers that call it

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _cached_hash(self) -> int:
        """Compute the hash once: identifiers are dict keys on every message's path."""
        try:
            return self._hash
        except AttributeError:
            value = hash((type(self).__name__, *self._key()))
            object.__setattr__(self, "_hash", value)
            return value

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._key()))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), self._key()


class Pid(_Frozen):
    """A process identifier: ``#PID<0.225.0>`` (NEW_PID_EXT on the wire)."""

    __slots__ = ("_ext", "_hash", "creation", "id", "node", "serial")
    _fields = ("node", "id", "serial", "creation")
    node: Atom
    id: int
    serial: int
    creation: int
    _ext: bytes  # its external format, as it came or as first encoded

    def __init__(self, node: Atom, id: int, serial: int = 0, creation: int = 0) -> None:
        _set(self, "node", node)
        _set(self, "id", id)
        _set(self, "serial", serial)
        _set(self, "creation", creation)

    __hash__ = _Frozen._cached_hash

    def __eq__(self, other: object) -> bool:
        # Pids are dict keys on every message's path (process tables, client maps): compare
        # the fields directly, cheapest first.
        if self is other:
            return True
        if type(other) is not Pid:
            return NotImplemented
        return (self.id == other.id and self.node is other.node
                and self.serial == other.serial and self.creation == other.creation)

    def __repr__(self) -> str:
        return f"Pid({self.node.name!r}, {self.id}, {self.serial}, {self.creation})"


class Reference(_Frozen):
    """A reference (NEWER_REFERENCE_EXT): a node, a creation and 1 to 5 id words."""

    __slots__ = ("_ext", "_hash", "creation", "ids", "node")
    _fields = ("node", "creation", "ids")
    node: Atom
    creation: int
    ids: tuple[int, ...]
    _ext: bytes  # its external format, as it came or as first encoded

    def __init__(self, node: Atom, creation: int, ids: Iterable[int]) -> None:
        _set(self, "node", node)
        _set(self, "creation", creation)
        _set(self, "ids", ids if type(ids) is tuple else tuple(ids))

    __hash__ = _Frozen._cached_hash

    def __repr__(self) -> str:
        return f"Reference({self.node.name!r}, {self.creation}, {self.ids})"


class Port(_Frozen):
    """A port identifier (V4_PORT_EXT carries a 64-bit id)."""

    __slots__ = ("_ext", "_hash", "creation", "id", "node")
    _fields = ("node", "id", "creation")
    node: Atom
    id: int
    creation: int
    _ext: bytes  # its external format, as it came or as first encoded

    def __init__(self, node: Atom, id: int, creation: int = 0) -> None:
        _set(self, "node", node)
        _set(self, "id", id)
        _set(self, "creation", creation)

    __hash__ = _Frozen._cached_hash

    def __repr__(self) -> str:
        return f"Port({self.node.name!r}, {self.id}, {self.creation})"


class ImproperList(_Frozen):
    """A list whose tail is not ``[]``, such as ``[:alias | ref]``."""

    __slots__ = ("elements", "tail")
    _fields = ("elements", "tail")
    elements: tuple[Any, ...]
    tail: Any

    def __init__(self, elements: Iterable[Any], tail: Any) -> None:
        elements = tuple(elements)
        if not elements:
            raise ArgumentError("an improper list has at least one element before its tail")
        _set(self, "elements", elements)
        _set(self, "tail", tail)

    def _as_tuple(self) -> tuple[Any, ...]:
        """What it hashes as, as the other records do; a chain of improper lists (their tails
        or elements) is walked by tuple_hash without recursion."""
        return ("ImproperList", self.elements, self.tail)

    def __hash__(self) -> int:
        try:  # CPython's own hash, fast, for the improper lists that nest little (nearly all)
            return hash(self._as_tuple())
        except RecursionError:
            return tuple_hash(self._as_tuple())

    def __repr__(self) -> str:
        return f"ImproperList({list(self.elements)!r}, {self.tail!r})"


class BitBinary(_Frozen):
    """A bitstring whose length is not a whole number of bytes.

    ``bits`` (1..8) is how many high bits of the last byte belong to it; the others are zero.
    """

    __slots__ = ("bits", "data")
    _fields = ("data", "bits")
    data: bytes
    bits: int

    def __init__(self, data: bytes, bits: int) -> None:
        if not data or not 1 <= bits <= 8:
            raise ArgumentError("a BitBinary has at least one byte and 1..8 bits in the last")
        _set(self, "data", bytes(data))
        _set(self, "bits", bits)

    def __repr__(self) -> str:
        return f"BitBinary({self.data!r}, {self.bits})"


class ExportFun(_Frozen):
    """An external fun, ``fun Module:Function/Arity`` (EXPORT_EXT)."""

    __slots__ = ("arity", "function", "module")
    _fields = ("module", "function", "arity")
    module: Atom
    function: Atom
    arity: int

    def __init__(self, module: Atom, function: Atom, arity: int) -> None:
        _set(self, "module", module)
        _set(self, "function", function)
        _set(self, "arity", arity)

    def __repr__(self) -> str:
        return f"ExportFun({self.module.name!r}, {self.function.name!r}, {self.arity})"


class Fun(_Frozen):
    """A closure (NEW_FUN_EXT). Python cannot run it; it keeps its exact encoding so that it
    goes back to the BEAM byte for byte. The decoded fields are there to look at."""

    __slots__ = ("arity", "encoded", "free_vars", "index", "module", "pid", "uniq")
    _fields = ("module", "arity", "index", "uniq", "pid", "free_vars", "encoded")
    module: Atom
    arity: int
    index: int
    uniq: bytes
    pid: Pid
    free_vars: tuple[Any, ...]
    encoded: bytes  # the whole NEW_FUN_EXT, tag included

    def __init__(self, module: Atom, arity: int, index: int, uniq: bytes, pid: Pid,
                 free_vars: tuple[Any, ...], encoded: bytes) -> None:
        _set(self, "module", module)
        _set(self, "arity", arity)
        _set(self, "index", index)
        _set(self, "uniq", uniq)
        _set(self, "pid", pid)
        _set(self, "free_vars", free_vars)
        _set(self, "encoded", encoded)

    def _key(self) -> tuple[Any, ...]:
        return (self.encoded,)

    def __repr__(self) -> str:
        return f"Fun({self.module.name!r}, arity={self.arity}, index={self.index})"


class Charlist(_Frozen):
    """A list of bytes sent compactly (STRING_EXT), e.g. Erlang's ``"abc"`` or Elixir's
    ``~c"abc"``. Decoding keeps this form so that it re-encodes to the same bytes."""

    __slots__ = ("data",)
    _fields = ("data",)
    data: bytes

    def __init__(self, data: bytes | str | Iterable[int]) -> None:
        if isinstance(data, str):
            data = data.encode("latin-1")
        _set(self, "data", bytes(data))

    def __iter__(self) -> Iterator[int]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __str__(self) -> str:
        return self.data.decode("latin-1")

    def tolist(self) -> list[int]:
        return list(self.data)

    def __repr__(self) -> str:
        return f"Charlist({self.data!r})"


class FrozenList(tuple[Any, ...]):
    """A hashable stand-in for a list, used where a list is a map key. Encodes as a list."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"FrozenList({list(self)!r})"


class FrozenMap(Mapping[Any, Any]):
    """A hashable, read-only map, used where a map is itself a map key. Encodes as a map."""

    __slots__ = ("_hash", "_items")
    _items: dict[Any, Any]
    _hash: int | None

    def __init__(self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = ()) -> None:
        object.__setattr__(self, "_items", dict(items))
        object.__setattr__(self, "_hash", None)

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        value = self._hash
        if value is None:
            value = hash(frozenset(self._items.items()))
            object.__setattr__(self, "_hash", value)
        return value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("FrozenMap is immutable")

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


class MapPairs(tuple[tuple[Any, Any], ...]):
    """A map whose keys Python would merge (``1`` and ``1.0``, or ``true`` and ``1``, are
    distinct keys in Erlang) or would have to hash too deeply, kept as its ``(key, value)``
    pairs. Encodes as a map."""

    __slots__ = ()
    __hash__ = tuple_hash  # its keys may nest without bound

    def __repr__(self) -> str:
        return f"MapPairs({list(self)!r})"


def freeze(term: Any) -> Any:
    """Return a hashable form of ``term``: lists become FrozenList, dicts FrozenMap, deeply."""
    kind = type(term)
    if kind is list:
        return FrozenList(freeze(item) for item in term)
    if kind is dict:
        return FrozenMap((freeze(k), freeze(v)) for k, v in term.items())
    if kind is tuple:
        return tuple(freeze(item) for item in term)
    if kind is ImproperList:
        return ImproperList((freeze(item) for item in term.elements), freeze(term.tail))
    return term
