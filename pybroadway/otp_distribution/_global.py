"""The one place that talks to ``:global`` (pybroadway.dist.global_names), isolated so the rest
of the connector works, by local name, on a node without it."""

from __future__ import annotations

import asyncio
import importlib
import logging
from types import ModuleType
from typing import Any

from pybroadway.dist import Node
from pybroadway.term import Atom, Pid

logger = logging.getLogger("pybroadway.otp_distribution")


def global_module() -> ModuleType | None:
    """``pybroadway.dist.global_names`` if this checkout has it, else None."""
    try:
        return importlib.import_module("pybroadway.dist.global_names")
    except ImportError:
        return None


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value


async def register_name(node: Node, name: Atom, pid: Pid, timeout: float = 10.0) -> bool:
    """Register ``name`` for ``pid`` in ``:global``; False (with a log line) when impossible
    or when it took longer than ``timeout`` seconds."""
    module = global_module()
    if module is None:
        logger.warning("pybroadway.dist.global_names is not available: %s is registered only "
                       "locally, reach it as {%s, %s}", name.name, name.name, node.name.name)
        return False
    try:
        async with asyncio.timeout(timeout):
            result = await _maybe_await(module.register_name(node, name, pid))
    except Exception as exc:  # a global failure must not stop the pipeline
        logger.error("could not register %s in :global: %r", name.name, exc)
        return False
    ok = result is not False and result != Atom("no")
    if not ok:
        logger.error("could not register %s in :global (%r)", name.name, result)
    return ok


async def unregister_name(node: Node, name: Atom) -> None:
    """Remove ``name`` from ``:global`` (nothing happens without global support)."""
    module = global_module()
    if module is not None and hasattr(module, "unregister_name"):
        await _maybe_await(module.unregister_name(node, name))


async def sync(node: Node) -> None:
    """``:global.sync()`` (nothing happens without global support)."""
    module = global_module()
    if module is not None and hasattr(module, "sync"):
        await _maybe_await(module.sync(node))


async def whereis_name(node: Node, name: Atom) -> Pid | None:
    """``:global.whereis_name(name)``; None if unknown or without global support."""
    module = global_module()
    if module is None:
        return None
    pid = await _maybe_await(module.whereis_name(node, name))
    return pid if isinstance(pid, Pid) else None
