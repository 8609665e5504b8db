"""The atoms and term shapes of ``global``'s protocol (version 8), and the server's own
local messages."""

from __future__ import annotations

from typing import Any

from pybroadway.term import Atom, ExportFun

VSN = 8
GNS = Atom("global_name_server")
GLOBAL = Atom("global")
YES = Atom("yes")
UNUSED = Atom("unused")
INSERT, DELETE = Atom("insert"), Atom("delete")
#: ``fun global:random_exit_name/3``, :func:`register_name`'s default resolver of a name clash.
RANDOM_EXIT_NAME = ExportFun(GLOBAL, Atom("random_exit_name"), 3)
PYBROADWAY = Atom("pybroadway")  # the mark of a Python node in init_connect's known map

# Local messages the server delivers to itself; objects, so no peer can forge them.
NODE_EVENT = object()  # (marker, node, up) from monitor_nodes
INITIATE = object()  # (marker, node, tag): time to start the lock step ourselves
LOCKED = object()  # (marker, node, tag, lock_id, extra, known): a lock step ended


def as_name(name: Any) -> Any:
    """A global name as the wire carries it: a ``str`` becomes an atom."""
    return Atom(name) if isinstance(name, str) and not isinstance(name, Atom) else name


def is_tagged(term: Any, tag: Atom, size: int) -> bool:
    """Whether ``term`` is a tuple of ``size`` elements whose first is ``tag``."""
    return type(term) is tuple and len(term) == size and term[0] is tag


def node_list(known: Any) -> list[Atom]:
    """Nodes of a known list, whose items are ``{Node, Vsn}`` (vsn ≥ 7) or bare atoms."""
    nodes: list[Atom] = []
    if isinstance(known, list):
        for item in known:
            if isinstance(item, Atom):
                nodes.append(item)
            elif type(item) is tuple and item and isinstance(item[0], Atom):
                nodes.append(item[0])
    return nodes


def by_name(node: Atom) -> str:
    """Sort key: the node's name."""
    return node.name
