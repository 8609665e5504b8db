"""The compiled accelerators, for the tests that need them, and how tests compare terms."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import pytest

from pybroadway.term import DeepTuple, _impl
from testkit.peers import IN_CI


def require_native() -> None:
    """Fail under CI, skip elsewhere, if the native codec is not built (``pip install -e .``
    builds it; scripts/test.sh does)."""
    if _impl.built is None:
        _missing(f"the native codec is not built: {_impl.reason}")


def require_built(accelerator: object, name: str) -> None:
    """The same for another compiled module, ``accelerator`` (None: it did not import)."""
    if accelerator is None:
        _missing(f"{name} is not built")


def _missing(what: str) -> None:
    message = f"{what} (pip install -e . builds it)"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def same_term(a: Any, b: Any, *, exact: bool = True) -> bool:
    """Whether ``a`` and ``b`` are the same term: equal all the way down and of the same types
    (floats bit for bit, NaN included), compared with a stack of its own so that terms of any
    depth compare (Python's ``==`` recurses). Not ``exact``, a DeepTuple and a tuple are
    alike (for a term built in Python against the one decoded)."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        kind = type(x)
        other = type(y)
        if not exact:
            kind = tuple if kind is DeepTuple else kind
            other = tuple if other is DeepTuple else other
        if kind is not other:
            return False
        if isinstance(x, float):
            if struct.pack(">d", x) != struct.pack(">d", y):
                return False
        elif isinstance(x, list | tuple):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif isinstance(x, Mapping):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
            pending.extend(zip(x.values(), y.values(), strict=True))
        elif hasattr(x, "_fields"):
            pending.extend((getattr(x, name), getattr(y, name)) for name in x._fields)
        elif x != y:
            return False
    return True
