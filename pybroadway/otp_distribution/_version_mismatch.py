"""Recognising a client of the library's other version by how it goes down.

The library's first version asks clients with ``:request_message``, its last with
``:pull_message``, and each version's client has a ``handle_cast`` clause for its own atom
only: sent the other one, it exits with ``{:function_clause, [{module, :handle_cast,
[atom, state], location} | _]}``, the failing call's arguments on top of the stack.
"""

from __future__ import annotations

from typing import Any

from pybroadway.term import Atom
from pybroadway.term.atoms import GEN_CAST

FUNCTION_CLAUSE = Atom("function_clause")
HANDLE_CAST = Atom("handle_cast")
HANDLE_INFO = Atom("handle_info")

# The pull request each version's clients understand, and the version's name.
_VERSIONS = {Atom("request_message"): "first", Atom("pull_message"): "last"}


def misunderstood(reason: Any, request: Atom) -> bool:
    """Whether the exit ``reason`` (a peer's term: anything) is a ``function_clause`` in a
    ``handle_cast`` called with ``request``, or a ``handle_info`` called with the cast itself.
    Looks at fixed places only, whatever the size of the term."""
    if not (type(reason) is tuple and len(reason) == 2 and reason[0] is FUNCTION_CLAUSE):
        return False
    stack = reason[1]
    if not (type(stack) is list and stack):
        return False
    frame = stack[0]
    if not (type(frame) is tuple and len(frame) == 4):
        return False
    function, args = frame[1], frame[2]
    if not (type(args) is list and args):
        return False
    if function is HANDLE_CAST:
        return args[0] is request
    if function is HANDLE_INFO:
        message = args[0]
        return (type(message) is tuple and len(message) == 2 and message[0] is GEN_CAST
                and message[1] is request)
    return False


def advice(request: Atom) -> str:
    """What to tell the user about a client that did not understand ``request``."""
    if request not in _VERSIONS:
        return f"it does not understand :{request.name}"
    other = next(atom for atom in _VERSIONS if atom is not request)
    return (f"it speaks the library's {_VERSIONS[other]} version; start serve with "
            f"--request-atom {other.name} (request_atom = \"{other.name}\" in a config)")
