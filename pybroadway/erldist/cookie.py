"""The Erlang magic cookie: read ``~/.erlang.cookie`` or create it the way ``erl`` does."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import string
from pathlib import Path

from pybroadway.errors import ArgumentError

__all__ = ["CookieFileError", "cookie_path", "default_cookie"]

log = logging.getLogger("pybroadway.erldist.cookie")

_COOKIE_LENGTH = 20


class CookieFileError(ArgumentError):
    """The cookie file could not be read or created (no home directory, not writable, ...)."""

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(f"cannot create the cookie file {path} ({exc.strerror or exc})")
        self.path = path


def cookie_path() -> Path:
    """Where ``erl`` keeps the cookie: ``$HOME/.erlang.cookie``."""
    home = os.environ.get("HOME") or str(Path.home())
    return Path(home) / ".erlang.cookie"


def _create(path: Path) -> str:
    cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(_COOKIE_LENGTH))
    # O_EXCL: if someone else creates it at the same moment, read theirs instead.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    except FileExistsError:
        return _read(path)
    except OSError as exc:  # no home directory, or not ours to write in
        raise CookieFileError(path, exc) from None
    try:
        os.write(fd, cookie.encode("ascii"))
    finally:
        os.close(fd)
    os.chmod(path, 0o400)
    # Said once, loudly: a node of this cookie reaches only nodes given the same one.
    log.warning("created the cookie file %s (a new random cookie: other nodes need the same "
                "one, in their ~/.erlang.cookie or their --cookie)", path)
    return cookie


def _read(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "cookie file %s is accessible by others (mode %o); erl would refuse it, "
            "chmod 400 it", path, stat.S_IMODE(mode))
    cookie = path.read_text(encoding="latin-1").strip()
    if not cookie:
        raise ArgumentError(f"cookie file {path} is empty")
    return cookie


def default_cookie(path: str | os.PathLike[str] | None = None) -> str:
    """Return the cookie from ``path`` (default ``~/.erlang.cookie``), creating it if missing.

    A new file holds 20 random letters A-Z, no newline, mode 0o400 — as ``erl`` makes it.
    Surrounding whitespace is stripped when reading. A file readable or writable by group or
    others is used, with a warning (``erl`` refuses such a file).
    """
    p = Path(path) if path is not None else cookie_path()
    if p.exists():
        return _read(p)
    return _create(p)
