"""The connector's use of ``:global``: registering the receiver and finding it, with the
failure handling a pipeline wants (a failed registration is logged, never raised)."""

from __future__ import annotations

import asyncio
import logging

from pybroadway.erldist import global_names
from pybroadway.erldist.process import ProcessHost
from pybroadway.term import Atom, Pid

logger = logging.getLogger("pybroadway.otp_distribution")


async def register_name(node: ProcessHost, name: Atom, pid: Pid, timeout: float = 10.0) -> bool:
    """Register ``name`` for ``pid`` in ``:global``; False (with a log line) when impossible
    or when it took longer than ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            registered = await global_names.register_name(node, name, pid)
    except Exception as exc:  # a global failure must not stop the pipeline
        logger.error("could not register %s in :global: %r", name.name, exc)
        return False
    if not registered:
        logger.error("could not register %s in :global: the name is taken", name.name)
    return registered


async def unregister_name(node: ProcessHost, name: Atom) -> None:
    """Remove ``name`` from ``:global``."""
    await global_names.unregister_name(node, name)


async def sync(node: ProcessHost) -> None:
    """``:global.sync()``."""
    await global_names.sync(node)


async def whereis_name(node: ProcessHost, name: Atom) -> Pid | None:
    """``:global.whereis_name(name)``; None if the name is unknown."""
    return global_names.whereis_name(node, name)
