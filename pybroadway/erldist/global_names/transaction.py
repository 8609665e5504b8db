"""``global``'s transactions: take the lock ``{global, Registrar}`` on every known node
(retrying with backoff while another requester holds it), run the body, unlock."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from pybroadway.erldist.global_names.name_server import GlobalNameServer
from pybroadway.erldist.global_names.protocol import GLOBAL, by_name
from pybroadway.erldist.global_names.requester import NO_ANSWER, Requester
from pybroadway.errors import TimedOut
from pybroadway.term import Atom

log = logging.getLogger("pybroadway.erldist.global")

Body = Callable[[list[Atom]], tuple[Any, bool]]
"""A transaction's work on the locked nodes: the request to call them with (None: no call)
and the transaction's result."""


async def transaction(gns: GlobalNameServer, body: Body, timeout: float) -> bool:
    """Run ``body`` under the global lock on every known visible node; its result."""
    registrar = gns.registrar
    assert registrar is not None
    lock_id = (GLOBAL, registrar.pid)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with gns.transaction:
        attempt = 0
        while True:
            visible = set(gns.visible_nodes())
            nodes = [peer for peer in gns.known_nodes() if peer in visible]
            locked = await _lock_all(gns, registrar, lock_id, nodes, deadline - loop.time())
            if locked:
                break
            attempt += 1
            delay = min(0.05 * 2 ** attempt, 1.0) * random.uniform(0.5, 1.5)
            if loop.time() + delay > deadline:
                raise TimedOut("the global lock stayed busy")
            log.debug("global lock busy, retrying in %.2fs", delay)
            await asyncio.sleep(delay)
        try:
            request, ok = body(nodes)
            if request is not None and nodes:
                await registrar.multi_call(nodes, request, max(deadline - loop.time(), 1.0))
            return ok
        finally:
            gns.del_lock(lock_id, registrar.pid)
            if nodes:
                await registrar.multi_call(nodes, (Atom("del_lock"), lock_id), 5.0)


async def _lock_all(gns: GlobalNameServer, registrar: Requester, lock_id: Any,
                    nodes: list[Atom], timeout: float) -> bool:
    """Set the lock on the boss (the greatest node), then on everyone; undo it all if any
    node refuses."""
    everyone = sorted([*nodes, gns.node.name], key=by_name)
    boss = everyone[-1]
    order = [[boss], [n for n in everyone if n is not boss]]
    done: list[Atom] = []
    ok = True
    for group in order:
        remote = [n for n in group if n is not gns.node.name]
        if gns.node.name in group:
            if gns.set_lock(lock_id, registrar.pid):
                done.append(gns.node.name)
            else:
                ok = False
        if remote:
            replies = await registrar.multi_call(remote, (Atom("set_lock"), lock_id),
                                                 max(timeout, 1.0))
            for peer in remote:
                reply = replies.get(peer)
                if reply is True or reply is NO_ANSWER:  # a late grant is deleted below
                    done.append(peer)
                if reply is not True and peer in replies:
                    ok = False
        if not ok:
            break
    if ok:
        return True
    if gns.node.name in done:
        gns.del_lock(lock_id, registrar.pid)
    remote_done = [n for n in done if n is not gns.node.name]
    if remote_done:
        await registrar.multi_call(remote_done, (Atom("del_lock"), lock_id), 5.0)
    return False
