"""Print terms the way Elixir's ``inspect/2`` does, for log lines a BEAM user can read.

``inspect(((Atom("push_message"), b"How are you?")))`` → ``{:push_message, "How are you?"}``.
Terms of any depth print without recursion; as in Elixir, ``limit`` also bounds the nesting
shown.
Pids of ``local_node`` print as ``#PID<0.N.S>``; pids of other nodes get a small number per
node, as the BEAM's own node table gives them.
"""

from __future__ import annotations

import builtins
import re
import sys
import weakref
from collections.abc import Callable, Generator, Iterable, Mapping
from itertools import count
from typing import Any

from pybroadway.term.elixir import STRUCT_KEY, field_order, struct_name
from pybroadway.term.types import (
    Atom,
    BitBinary,
    Charlist,
    ExportFun,
    FrozenList,
    Fun,
    ImproperList,
    MapPairs,
    Pid,
    Port,
    Reference,
)

__all__ = ["inspect"]

_IDENTIFIER = re.compile(r"[^\W\d]\w*[?!]?\Z|[^\W\d]\w*@\w*\Z")
_ALIAS = re.compile(r"Elixir(\.[A-Z]\w*)+\Z")
_OPERATORS = frozenset(
    r"+ - * / ++ -- ! ^ & | || && == != === !== < > <= >= =~ <> |> <<< >>> ~~~ .. ... :: <- "
    r"\\ @ . -> =".split())
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a",
            "\b": "\\b", "\f": "\\f", "\v": "\\v", "\x1b": "\\e", "\0": "\\0", "#{": "\\#{"}

# Weak: a node named in a term alone (a hostile peer can name millions) is not kept for this.
_node_numbers: weakref.WeakKeyDictionary[Atom, int] = weakref.WeakKeyDictionary()
_next_node_number = count(1)


def _node_number(node: Atom, local_node: Atom | None) -> int:
    if node is local_node:
        return 0
    number = _node_numbers.get(node)
    if number is None:
        number = _node_numbers[node] = next(_next_node_number)
    return number


#: How much of a term a log line shows, as Elixir's Logger ``truncate`` (8 KiB) does.
LOG_TRUNCATE = 8096

#: Integers above this many bits print in hex: decimal conversion is quadratic in the size
#: (CPython refuses it past 4,300 digits), hex is linear, and ``0x…`` is valid Elixir.
_DECIMAL_BITS = 14_000

_TRUNCATED = " (truncated)"


def inspect(term: Any, *, local_node: Atom | str | None = None, limit: int = 50,
            printable_limit: int = 4096, truncate: int | None = None) -> str:
    """Return ``term`` as Elixir's ``inspect`` would print it.

    ``limit`` caps how many items of a list, tuple or map are shown and ``printable_limit``
    how many characters of a string, as Elixir's options of the same names do. ``truncate``
    caps the whole text, as Elixir's Logger does: past it the text is cut and marked
    ``(truncated)``, and the parts of the term beyond it are not even looked at.
    """
    if isinstance(local_node, str):
        local_node = Atom(local_node)
    printer = _Printer(local_node, limit, printable_limit, truncate)
    text = printer.text_of(term)
    if truncate is not None and (printer.room < 0 or len(text) > truncate):
        return text[:truncate] + _TRUNCATED
    return text


def loggable(term: Any) -> str:
    """``term`` as a log line shows it: :func:`inspect`, truncated at :data:`LOG_TRUNCATE`."""
    return inspect(term, truncate=LOG_TRUNCATE)


class _Printer:
    """Prints a term with an explicit stack: a container is a generator that writes its own
    text and yields the terms inside it, in order, so that any depth costs heap, never the
    stack; the text is made of fragments joined once, so that depth costs no copies either."""

    def __init__(self, local_node: Atom | None, limit: int, printable_limit: int,
                 truncate: int | None) -> None:
        self.local_node = local_node
        self.limit = limit
        self.printable_limit = printable_limit
        # What is left of the text's budget; below zero, containers stop adding items.
        self.room = truncate if truncate is not None else sys.maxsize
        self.fragments: builtins.list[str] = []

    def text_of(self, term: Any) -> str:
        stack: builtins.list[_Printing] = []  # the containers being printed, innermost last
        while True:
            text = self.leaf(term)
            if text is None:
                stack.append(self.container(term, len(stack)))
            else:
                self.write(text)
            while stack:
                term = next(stack[-1], _DONE)
                if term is not _DONE:
                    break
                stack.pop()
            else:
                return "".join(self.fragments)

    def write(self, text: str) -> None:
        self.fragments.append(text)
        self.room -= len(text)

    def leaf(self, term: Any) -> str | None:
        if term is None:
            return "nil"
        if term is True:
            return "true"
        if term is False:
            return "false"
        kind = type(term)
        if kind is Atom:
            return self.atom(term)
        if isinstance(term, int):
            return _integer(int(term))
        if isinstance(term, float):
            return _float(term)
        if isinstance(term, str):
            return self.string(term)
        if isinstance(term, bytes | bytearray | memoryview):
            return self.binary(bytes(term))
        if kind is Pid:
            node = _node_number(term.node, self.local_node)
            return f"#PID<{node}.{term.id}.{term.serial}>"
        if kind is Reference:
            node = _node_number(term.node, self.local_node)
            return f"#Reference<{node}.{'.'.join(str(i) for i in reversed(term.ids))}>"
        if kind is Port:
            return f"#Port<{_node_number(term.node, self.local_node)}.{term.id}>"
        if kind is BitBinary:
            whole = [str(b) for b in term.data[:-1]]
            last = term.data[-1] >> (8 - term.bits)
            return "<<" + ", ".join([*whole, f"{last}::size({term.bits})"]) + ">>"
        if kind is ExportFun:
            return f"&{self.module(term.module)}.{_fun_name(term.function)}/{term.arity}"
        if kind is Fun:
            return (f"#Function<{term.index}.{int.from_bytes(term.uniq[:4], 'big')}"
                    f"/{term.arity} in {self.module(term.module)}>")
        if isinstance(term, tuple | list | Mapping) or kind is ImproperList or kind is Charlist:
            return None
        return repr(term)

    def container(self, term: Any, depth: int) -> _Printing:
        # As in Elixir, ``limit`` also bounds the nesting: past it, a container shows "...".
        shown = self.limit if depth < self.limit else 0
        kind = type(term)
        if kind is MapPairs:
            return self.map(builtins.list(term), None, shown)
        if isinstance(term, list | FrozenList):
            return self.list(builtins.list(term), shown)
        if isinstance(term, Mapping):
            return self.map(builtins.list(term.items()), struct_name(term), shown)
        if kind is ImproperList:
            return self.improper(term, shown)
        if kind is Charlist:
            return self.charlist(term.data, shown)
        return self.enclosed("{", term, "}", shown)

    def atom(self, atom: Atom) -> str:
        name = atom.name
        if _ALIAS.match(name):
            return name[len("Elixir."):]
        if name in ("nil", "true", "false"):
            return name
        if _IDENTIFIER.match(name) or name in _OPERATORS:
            return ":" + name
        return ':"' + _escape(name) + '"'

    def module(self, atom: Atom) -> str:
        return self.atom(atom)

    def string(self, text: str) -> str:
        if len(text) > self.printable_limit:
            return '"' + _escape(text[:self.printable_limit]) + '" <> ...'
        return '"' + _escape(text) + '"'

    def binary(self, data: bytes) -> str:
        # A huge binary is judged by the part that can be shown: it is not decoded whole.
        cut = len(data) > 4 * self.printable_limit
        text = _utf8(data[:4 * self.printable_limit] if cut else data, cut)
        if text is not None and _printable(text):
            if cut and len(text) <= self.printable_limit:
                return '"' + _escape(text) + '" <> ...'
            return self.string(text)
        shown = ", ".join(str(b) for b in data[:self.limit])
        return "<<" + shown + (", ..." if len(data) > self.limit else "") + ">>"

    def charlist(self, data: bytes, shown: int) -> _Printing:
        text = data.decode("latin-1")
        if data and _printable(text) and all(32 <= b < 127 or chr(b) in "\n\t\r" for b in data):
            self.write("'" + _escape(text).replace("'", "\\'").replace('\\"', '"') + "'")
        else:
            yield from self.list(builtins.list(data), shown)

    def enclosed(self, left: str, items: Any, right: str, shown: int) -> _Printing:
        self.write(left)
        yield from self.join(items, len(items), shown)
        self.write(right)

    def improper(self, term: ImproperList, shown: int) -> _Printing:
        if not shown:  # as Elixir: the tail is one of the items it does not show
            self.write("[...]")
            return
        self.write("[")
        yield from self.join(term.elements, len(term.elements), shown)
        self.write(" | ")
        yield term.tail
        self.write("]")

    def join(self, items: Iterable[Any], total: int, shown: int,
             piece: Callable[[Any], _Printing] | None = None) -> _Printing:
        """At most ``shown`` of ``items`` (each one printed by ``piece``, or as a term), and
        none once the budget is spent; ``...`` marks what was left out."""
        count = 0
        for item in items:
            if count >= shown or self.room < 0:
                break
            if count:
                self.write(", ")
            if piece is None:
                yield item
            else:
                yield from piece(item)
            count += 1
        if count < total:
            self.write(", ..." if count else "...")

    def list(self, items: builtins.list[Any], shown: int) -> _Printing:
        if items and all(type(i) is tuple and len(i) == 2 and type(i[0]) is Atom
                         for i in items):
            self.write("[")
            yield from self.join(items, len(items), shown, self.keyword)
            self.write("]")
        else:
            yield from self.enclosed("[", items, "]", shown)

    def keyword(self, pair: tuple[Atom, Any]) -> _Printing:
        text = self.atom(pair[0])
        self.write((text[1:] if text.startswith(":") else text) + ": ")
        yield pair[1]

    def pair(self, pair: tuple[Any, Any]) -> _Printing:
        yield pair[0]
        self.write(" => ")
        yield pair[1]

    def map(self, pairs: builtins.list[tuple[Any, Any]], struct: str | None,
            shown: int) -> _Printing:
        if struct is not None:
            rank = field_order(struct)
            fields = sorted(((k, v) for k, v in pairs if k is not STRUCT_KEY),
                            key=lambda kv: rank(kv[0]))
            self.write("%" + struct + "{")
            yield from self.join(fields, len(fields), shown, self.keyword)
        elif not pairs:
            self.write("%{")
        else:
            if len(pairs) <= 32:  # the BEAM walks small maps in term order, large ones by hash
                pairs = sorted(pairs, key=lambda kv: _term_order(kv[0]))
            atoms = all(type(k) is Atom for k, _ in pairs)
            self.write("%{")
            yield from self.join(pairs, len(pairs), shown, self.keyword if atoms else self.pair)
        self.write("}")


_Printing = Generator[Any, None, None]
"""Prints a container: writes its text and yields each term inside it in turn."""

_DONE: Any = object()


#: How deep map keys are looked at to sort them: deeper, keys that agree so far keep their order
#: (the sort key's recursion, and the comparison of keys, stay shallow).
_ORDER_DEPTH = 8


def _term_order(term: Any, depth: int = 0) -> tuple[Any, ...]:
    """A sort key following Erlang's term order: number < atom < reference < fun < port <
    pid < tuple < map < list < bitstring."""
    if depth > _ORDER_DEPTH:
        return ()
    inner = depth + 1
    if term is None or term is True or term is False:
        return (1, "nil" if term is None else str(term).lower())
    if isinstance(term, int | float):
        return (0, term)
    kind = type(term)
    if kind is Atom:
        return (1, term.name)
    if kind is Reference:
        return (2, term.node.name, tuple(reversed(term.ids)))
    if kind is ExportFun or kind is Fun:
        return (3, repr(term))
    if kind is Port:
        return (4, term.node.name, term.id)
    if kind is Pid:
        return (5, term.node.name, term.id, term.serial)
    if isinstance(term, tuple) and kind is not FrozenList and kind is not MapPairs:
        return (6, len(term), tuple(_term_order(item, inner) for item in term))
    if isinstance(term, Mapping):
        return (7, len(term), tuple(sorted(_term_order(k, inner) for k in term)))
    if isinstance(term, list | FrozenList | Charlist):
        return (8, tuple(_term_order(item, inner) for item in term))
    if kind is ImproperList:
        return (8, tuple(_term_order(item, inner) for item in term.elements))
    if isinstance(term, str):
        return (9, term.encode())
    if isinstance(term, bytes | bytearray):
        return (9, bytes(term))
    return (9, repr(term).encode())


def _fun_name(atom: Atom) -> str:
    name = atom.name
    return name if _IDENTIFIER.match(name) else '"' + _escape(name) + '"'


def _printable(text: str) -> bool:
    return all(ch.isprintable() or ch in "\n\t\r\a\b\f\v\x1b" for ch in text)


def _escape(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        if text.startswith("#{", i):
            out.append("\\#{")
            i += 2
            continue
        ch = text[i]
        out.append(_ESCAPES.get(ch, ch) if ch.isprintable() or ch in _ESCAPES
                   else f"\\x{{{ord(ch):X}}}")
        i += 1
    return "".join(out)


def _float(value: float) -> str:
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}e{int(exponent)}"
    return text


def _integer(value: int) -> str:
    if value.bit_length() > _DECIMAL_BITS:
        return f"-0x{-value:X}" if value < 0 else f"0x{value:X}"
    return str(value)


def _utf8(data: bytes, cut: bool) -> str | None:
    """``data`` as UTF-8, or None; when ``cut``, a character split by the cut is dropped."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if cut and exc.reason == "unexpected end of data":
            return data[:exc.start].decode("utf-8")
        return None
