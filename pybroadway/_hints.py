"""One line for each failure users meet on the command line: what happened and what to do.

``pybroadway`` (:mod:`pybroadway.cli`) and the examples print these instead of a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from pybroadway.erldist.cookie import CookieFileError
from pybroadway.erldist.epmd import EpmdError, EpmdUnreachable, NameTaken, NotRegistered
from pybroadway.erldist.handshake import HandshakeError, WrongCookie

EPMD_HINT = "start one with `pybroadway epmd serve`, or check ERL_EPMD_PORT (or --epmd-port)"


def explain(exc: BaseException) -> str:
    """Why a command failed, with what to do about it when we know."""
    if isinstance(exc, NameTaken):
        return (f"the name {exc.name} is taken: another node registered it with epmd at "
                f"{exc.host}:{exc.port}; choose another with --sname")
    if isinstance(exc, CookieFileError):
        return f"{exc}: give the cookie with --cookie, or set HOME to a writable directory"
    if isinstance(exc, EpmdUnreachable):
        return f"{exc}: {EPMD_HINT}"
    return str(exc) or type(exc).__name__


def why_not_connected(node: str, exc: BaseException) -> str:
    """Why ``node`` could not be connected to (what ``Node.connect(check=True)`` raised)."""
    if isinstance(exc, WrongCookie):
        return f"{node} refused the handshake: is the cookie right?"
    if isinstance(exc, NotRegistered):
        return (f"{node} is not registered with epmd at {exc.host}:{exc.port}: is it running, "
                f"with this EPMD?")
    if isinstance(exc, TimeoutError):
        return f"{node} did not answer in time"
    if isinstance(exc, EpmdError | HandshakeError):
        return explain(exc)
    return f"cannot connect to {node}: {exc}"


def install_command(extra: str, requirement: str) -> str:
    """The pip command that installs pybroadway's ``extra`` from where the user is: the clone
    this package runs from (``.`` in its root, else its path; the package is on no registry),
    or, installed from elsewhere, ``requirement`` itself."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        return f"pip install {requirement}"
    where = "." if Path(os.getcwd()).resolve() == root else str(root)
    return f"pip install '{where}[{extra}]'"
