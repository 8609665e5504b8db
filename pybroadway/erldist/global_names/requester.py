"""The pids that make ``global``'s calls to other nodes (the locker and the registrar)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pybroadway.erldist.global_names.protocol import GNS
from pybroadway.erldist.process import Process
from pybroadway.term import Atom, Reference, loggable
from pybroadway.term.atoms import DOWN, GEN_CALL

log = logging.getLogger("pybroadway.erldist.global")

NO_ANSWER = object()
"""What :meth:`Requester.multi_call` gives for a node that did not answer in time (one that
went down is left out)."""


class Requester(Process):
    """A pid that makes gen calls from a mailbox of its own (locks are tied to the caller's
    pid, so ``Node.call``'s anonymous caller will not do)."""

    async def run(self) -> None:
        await asyncio.get_running_loop().create_future()  # lives until the node stops

    async def multi_call(self, nodes: list[Atom], request: Any, timeout: float
                         ) -> dict[Atom, Any]:
        """Call ``global_name_server`` on every node: each node's reply, :data:`NO_ANSWER`
        for one that did not answer within ``timeout`` seconds; a node that is down is left
        out."""
        pending: dict[Reference, Atom] = {}
        for node in nodes:
            ref = self.monitor((GNS, node))
            pending[ref] = node
            self.send((GNS, node), (GEN_CALL, (self.pid, ref), request))
        replies: dict[Atom, Any] = {}

        def match(message: Any) -> bool:
            return type(message) is tuple and (
                (len(message) == 2 and message[0] in pending)
                or (len(message) == 5 and message[0] is DOWN and message[1] in pending))

        try:
            async with asyncio.timeout(timeout):
                while pending:
                    message = await self.receive(match)
                    if message[0] is DOWN:
                        node = pending.pop(message[1])
                        log.info("global call %s to %s: %s", loggable(request), node.name,
                                 loggable(message[4]))
                    else:
                        ref = message[0]
                        self.demonitor(ref)
                        replies[pending.pop(ref)] = message[1]
        except TimeoutError:
            # no warning: a busy node answers late (its answers can wait behind data on a
            # connection this node reads slowly, to hold back a client that pushes)
            log.info("global call %s: no answer yet from %s", loggable(request),
                     [n.name for n in pending.values()])
            for ref, node in pending.items():
                self.demonitor(ref)
                replies[node] = NO_ANSWER
        return replies
