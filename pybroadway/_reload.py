"""``serve``'s reload: on SIGHUP, or when ``pybroadway reload NODE`` asks, the user's modules are
imported afresh, ``--config``'s file is read again, and the pipeline made from them takes over
the running one in place (:meth:`Pipeline.reload`): the node, its connections, the receiver and
its clients stay. A new version that does not import, whose options are wrong, or that fails to
start is refused in one line, and the running version goes on.

``pybroadway reload NODE`` reaches the serving node over the distribution, as ``ping`` does,
and calls the process ``serve`` registers as :data:`NAME`; so does a BEAM operator::

    GenServer.call({:pybroadway_reload, :"server@host"}, :reload, 60_000)
    #=> {:ok, "3f2a9c0d1b7e"} | {:error, "why, in one line"}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import importlib
import importlib.util
import logging
import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pybroadway
from pybroadway._arguments import reaching
from pybroadway.erldist import CallError, From, GenServer
from pybroadway.errors import PyBroadwayError
from pybroadway.pipeline import Pipeline
from pybroadway.term import Atom
from pybroadway.term.atoms import ERROR, OK

log = logging.getLogger("pybroadway.serve")

NAME = "pybroadway_reload"
"""The name of the process of a serving node that answers ``:reload`` calls."""
RELOAD = Atom("reload")
MAX_REASON = 500
"""The longest reason given for a refusal (a user's exception can say a lot)."""

#: What the command line fixes for the life of a serve: a reload that changes one is refused.
KEPT = ("sname", "cookie", "listen", "epmd_port", "ticktime", "mode", "receiver_name",
        "overflow", "request_atom", "buffer_size", "resume_at", "pull_interval",
        "register_global", "message_log_level", "subscribe", "max_demand", "workers",
        "redeliver", "metrics_port", "metrics_host", "proto_dist", "ssl_dist_optfile")

_LIBRARIES = {Path(path).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")
              if (path := sysconfig.get_paths().get(key))}
_LIBRARIES.add(Path(pybroadway.__file__).resolve().parent)


class ReloadRefused(PyBroadwayError):
    """A new version was refused; its text is the reason, in one line."""


def _users(module: ModuleType) -> bool:
    """Whether ``module`` is the user's code: a Python source file outside the standard
    library, the installed packages and pybroadway (extension modules cannot be imported
    twice, and the libraries' state must outlive a reload)."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py") or module.__name__ == "__main__":
        return False
    path = Path(file).resolve()
    return not any(path.is_relative_to(library) for library in _LIBRARIES)


class UserModules:
    """The user's modules in ``sys.modules`` (see :func:`_users`), forgotten before the new
    version is imported, and put back if it is refused."""

    def current(self) -> dict[str, ModuleType]:
        return {name: module for name, module in list(sys.modules.items())
                if isinstance(module, ModuleType) and _users(module)}

    def forget(self) -> None:
        """Take the user's modules out of ``sys.modules``: the next import runs their files
        again."""
        for name, module in self.current().items():
            del sys.modules[name]
            # The compiled file is trusted when the source's mtime (in seconds) and size are
            # unchanged: an edit within the same second that keeps the size would not be seen.
            with contextlib.suppress(OSError):
                os.unlink(importlib.util.cache_from_source(str(module.__file__)))
        importlib.invalidate_caches()

    def restore(self, modules: dict[str, ModuleType]) -> None:
        """The new version was refused: what it imported goes, the running one's come back
        (a module its code imports later finds them)."""
        for name in self.current():
            del sys.modules[name]
        sys.modules.update(modules)

    def digest(self) -> str:
        """The first 12 hex digits of a SHA-256 over the user's module files: the version of
        the code when the pipeline names none."""
        digest = hashlib.sha256()
        for name, module in sorted(self.current().items()):
            digest.update(name.encode())
            try:
                digest.update(Path(str(module.__file__)).read_bytes())
            except OSError:
                continue
        return digest.hexdigest()[:12]


MakePipeline = Callable[[argparse.Namespace], Pipeline]
"""Makes the pipeline of a command line whose ``--config`` was applied."""


class Reloader:
    """Reloads a running ``serve``. ``command_line`` is serve's arguments as parsed (before
    ``--config`` was applied: the file is read again), ``running`` the arguments it runs
    with, ``make`` what makes a pipeline of them and ``prepare`` what applies ``--config``
    (raising :class:`~pybroadway._config.ConfigError`)."""

    def __init__(self, pipeline: Pipeline, command_line: argparse.Namespace,
                 running: argparse.Namespace, prepare: Callable[[argparse.Namespace], None],
                 make: MakePipeline) -> None:
        self.pipeline = pipeline
        self.command_line = copy.copy(command_line)
        self.running = running
        self.prepare = prepare
        self.make = make
        self.modules = UserModules()
        self._lock = asyncio.Lock()

    async def reload(self) -> str:
        """Reload; return the new version, or raise :class:`ReloadRefused` saying why (the
        running version goes on). One at a time."""
        async with self._lock:
            saved = self.modules.current()
            try:
                self.modules.forget()
                args = copy.copy(self.command_line)
                self.prepare(args)
                changed = [key for key in KEPT
                           if getattr(args, key, None) != getattr(self.running, key, None)]
                if changed:
                    raise ReloadRefused(
                        f"the configuration changes {', '.join(changed)}, which a reload "
                        f"keeps: restart serve to change {'it' if len(changed) == 1 else 'them'}")
                await self.pipeline.reload(self.make(args))
            except (Exception, SystemExit) as exc:  # a module that exits when imported
                self.modules.restore(saved)
                raise ReloadRefused(_reason(exc)) from None
            return str(self.pipeline.stats()["version"])

    async def reload_logged(self) -> None:
        """Reload (on SIGHUP): the outcome is logged, a refusal in one line."""
        version = self.pipeline.stats()["version"]
        log.info("reloading (version %s handles messages)", version)
        try:
            await self.reload()
        except ReloadRefused as exc:
            log.error("reload refused, version %s handles messages still: %s", version, exc)


def _reason(exc: BaseException) -> str:
    # pybroadway's errors say what went wrong in words; anything else is named by its type
    text = str(exc) if isinstance(exc, PyBroadwayError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())  # one line
    return text if len(text) <= MAX_REASON else f"{text[:MAX_REASON]}…"


class ReloadServer(GenServer):
    """The process ``pybroadway reload`` calls (registered as :data:`NAME`): ``:reload`` is
    answered ``{:ok, version}`` or ``{:error, reason}`` once the reload is done."""

    def __init__(self, reloader: Reloader) -> None:
        super().__init__()
        self.reloader = reloader

    async def handle_call(self, request: Any, from_: From) -> Any:
        if request is not RELOAD:
            return (ERROR, b"unknown request: only :reload is")
        log.info("reload asked")  # (by whom: the From is the caller's word, not proof)
        try:
            return (OK, (await self.reloader.reload()).encode())
        except ReloadRefused as exc:
            version = self.reloader.pipeline.stats()["version"]
            log.error("reload refused, version %s handles messages still: %s", version, exc)
            return (ERROR, str(exc).encode())


async def ask(args: argparse.Namespace) -> tuple[bool, str]:
    """``pybroadway reload NODE``: ``(True, the new version)``, or ``(False, why not)``: it
    was refused (``refused: …``), or the node was not reached or did not answer."""
    async with reaching(args) as (node, failure):
        if failure is not None:
            return False, f"cannot reach {args.node} ({failure})"
        try:
            reply = await node.call((NAME, args.node), RELOAD, timeout=args.timeout)
        except CallError as exc:
            if exc.reason == Atom("noproc"):
                return False, f"{args.node} runs no pybroadway serve"
            return False, f"no answer from {args.node}: {exc}"
    if type(reply) is tuple and len(reply) == 2 and isinstance(reply[1], bytes):
        said = reply[1].decode(errors="replace")
        return (True, said) if reply[0] is OK else (False, f"refused: {said}")
    return False, f"{args.node} answered something else than a reload's outcome"
