"""What a message or a signal is addressed to: a pid, a local name, or ``(name, node)``."""

from __future__ import annotations

from typing import Any

from pybroadway.term import Atom, Pid


def node_of(target: Any, here: Atom) -> Atom:
    """The node a target lives on: a pid's, a ``(name, node)`` pair's, else ``here``."""
    if type(target) is Pid:
        return target.node
    if type(target) is tuple and len(target) == 2:
        node = target[1]
        return node if isinstance(node, Atom) else Atom(node)
    return here


def target_name(target: Any) -> Any:
    """What a signal names its target by: a ``(name, node)`` pair's name as an atom, a pid or
    a local name as given."""
    if type(target) is tuple:
        return target[0] if isinstance(target[0], Atom) else Atom(target[0])
    return target
