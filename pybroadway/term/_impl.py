"""Which codec runs: the compiled accelerator or the pure-Python reference.

The accelerator, ``pybroadway.term._ccodec``, is C written by hand against the CPython API
(sources in ``pybroadway/term/_native``): installing the package builds it when a C compiler
is there, and needs nothing else (no Cython). Without it, or with the environment variable
``PYBROADWAY_PURE_PYTHON=1``, the pure-Python codec runs: it is the reference, and both give
the same values, the same bytes and the same errors. Each :class:`~pybroadway.term.Decoder`
and :class:`~pybroadway.term.Encoder` takes the implementation active when it is made.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from types import ModuleType

from pybroadway.errors import ArgumentError, StateError
from pybroadway.term._reading import map_from_items
from pybroadway.term.errors import DecodeError, EncodeError
from pybroadway.term.types import Atom, Charlist, ImproperList, Pid, Reference

log = logging.getLogger("pybroadway.term")

FORCE_PURE = "PYBROADWAY_PURE_PYTHON"
"""Set to anything but ``""`` or ``"0"``, the pure-Python codec runs even when the compiled
one is built."""


def pure_forced() -> bool:
    """Whether ``PYBROADWAY_PURE_PYTHON`` asks for the pure-Python versions (of the codec, and
    of the workers' message builder)."""
    return os.environ.get(FORCE_PURE, "") not in ("", "0")


def _not_built() -> str:
    """Why the accelerator is missing, and what builds it."""
    source = Path(__file__).resolve().parents[2]
    if (source / "setup.py").is_file():  # running from a source tree, never built there
        return (f"the compiled codec is not built in {source}: `pip install -e .` there builds "
                f"it (with a C compiler and Python's headers)")
    return "the compiled codec is not built (was a C compiler missing at the installation?)"


def _load() -> tuple[ModuleType | None, ModuleType | None, str]:
    """(the built accelerator, the one to use, why the pure codec runs)."""
    try:
        _ccodec = importlib.import_module("pybroadway.term._ccodec")
    except ModuleNotFoundError:
        return None, None, _not_built()
    except ImportError as exc:
        return None, None, f"the native accelerator does not load: {exc}"
    _ccodec.setup(Atom, Pid, Reference, Charlist, ImproperList, DecodeError, EncodeError,
                  map_from_items)
    if pure_forced():
        return _ccodec, None, f"{FORCE_PURE} is set"
    return _ccodec, _ccodec, ""


built, active, reason = _load()
"""``built``: the compiled module if it could be imported; ``active``: the one new decoders
and encoders use (None: pure Python); ``reason``: why the pure codec runs."""

_announced = False


def implementation() -> str:
    """``"native"`` or ``"python"``: what new decoders and encoders run."""
    return "native" if active is not None else "python"


def announce() -> None:
    """Log once per process, at INFO on ``pybroadway.term``, that the pure-Python codec runs
    and why (the node calls this when it starts). Silent when the accelerator runs."""
    global _announced
    if active is None and not _announced:
        _announced = True
        log.info("term codec: pure Python, %s", reason)


def select(name: str) -> None:
    """Make new decoders and encoders run ``"native"`` or ``"python"`` (for tests and
    benchmarks; use :func:`pybroadway.term.use_implementation`, which also remakes the shared
    ones)."""
    global active
    if name == "native":
        if built is None:
            raise StateError(f"the native codec is not available: {reason}")
        active = built
    elif name == "python":
        active = None
    else:
        raise ArgumentError(f"implementation is 'native' or 'python', not {name!r}")
