"""Elixir conventions on top of plain terms: structs are maps with a ``__struct__`` key."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pybroadway.term.types import Atom

STRUCT_KEY = Atom("__struct__")
_PREFIX = "Elixir."

# Elixir prints a struct's fields in the order of its defstruct; a map does not carry that
# order, so the structs pybroadway logs are known here (others print in alphabetical order).
_FIELD_ORDERS: dict[str, tuple[str, ...]] = {
    "Broadway.Message": ("data", "metadata", "acknowledger", "batcher", "batch_key",
                         "batch_mode", "status"),
    "Broadway.BatchInfo": ("batcher", "batch_key", "partition", "size", "trigger"),
}


def register_struct(name: str, fields: Iterable[str]) -> None:
    """Tell :func:`~pybroadway.term.inspect` the defstruct order of an Elixir struct."""
    _FIELD_ORDERS[name] = tuple(fields)


def field_order(name: str) -> Callable[[Any], tuple[int, str]]:
    """A sort key putting a struct's fields in defstruct order (known fields first)."""
    order = {field: i for i, field in enumerate(_FIELD_ORDERS.get(name, ()))}

    def rank(key: Any) -> tuple[int, str]:
        text = key.name if isinstance(key, Atom) else repr(key)
        return (order.get(text, len(order)), text)

    return rank


def module_atom(name: str) -> Atom:
    """The atom of an Elixir module: ``"Broadway.Message"`` → ``:"Elixir.Broadway.Message"``."""
    return Atom(name if name.startswith(_PREFIX) else _PREFIX + name)


def struct(name: str, fields: Mapping[str | Atom, Any] | None = None, /,
           **more: Any) -> dict[Atom, Any]:
    """Build an Elixir struct, e.g. ``struct("Broadway.Message", data="hi", status=Atom("ok"))``.

    Keys become atoms and are laid out in Erlang's term order, as the BEAM writes small maps,
    so the result encodes to the same bytes as the struct built in Elixir.
    """
    items: dict[Atom, Any] = {STRUCT_KEY: module_atom(name)}
    given: dict[str | Atom, Any] = dict(fields or {})
    given.update(more)
    for key, value in given.items():
        items[key if isinstance(key, Atom) else Atom(key)] = value
    return dict(sorted(items.items(), key=lambda item: item[0].name.encode()))


def struct_name(term: Any) -> str | None:
    """The Elixir module name of a struct (``"Broadway.Message"``), or None if not a struct."""
    if isinstance(term, Mapping):
        module = term.get(STRUCT_KEY)
        if type(module) is Atom:
            name = module.name
            return name[len(_PREFIX):] if name.startswith(_PREFIX) else name
    return None
