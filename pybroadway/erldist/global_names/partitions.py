"""Preventing overlapping partitions, as ``global`` does from OTP 25 on
(``prevent_overlapping_partitions``): no node stays connected to two nodes that are not
connected to each other.

- A node that loses a connection tells every other node it knows:
  ``{lost_connection, Node, XCreation, OpId, LostNode}``.
- A node that hears of it for the first time passes it on to every node it knows, then asks
  ``LostNode`` (or, if it is ``LostNode`` itself, ``Node``) to drop their connection with
  ``{remove_connection, Self}`` and forgets that node.
- A node asked to remove a connection drops it.

A connection dropped on request does not count as lost: the nodes that drop it already agree.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pybroadway._throttle import Throttle
from pybroadway.erldist.global_names.protocol import GNS
from pybroadway.term import Atom, loggable

if TYPE_CHECKING:
    from pybroadway.erldist.process import ProcessHost

log = logging.getLogger("pybroadway.erldist.global")

LOST_CONNECTION = Atom("lost_connection")
REMOVE_CONNECTION = Atom("remove_connection")

#: How long a lost_connection stays remembered (global.erl keeps it a while too), so that its
#: echoes from the other nodes are recognised.
REMEMBER_FOR = 60.0
#: At most this many are remembered (a peer could send endless distinct ones).
REMEMBER_AT_MOST = 10_000


class PartitionGuard:
    """One node's part in preventing overlapping partitions.

    ``known()`` gives the nodes this node knows in global's sense; ``forget(node)`` clears
    global's state about a node (as a nodedown does).
    """

    def __init__(self, node: ProcessHost, known: Callable[[], list[Atom]],
                 forget: Callable[[Atom], None]) -> None:
        self.node = node
        self._known = known
        self._forget = forget
        self.removing: set[Atom] = set()
        """Nodes whose connection is being dropped on request: their nodedown is expected."""
        self._seen: dict[tuple[Atom, Atom], tuple[Any, int, float]] = {}
        self._op_ids = itertools.count(1)
        self._malformed = Throttle(log, logging.WARNING, "malformed lost_connection messages")

    def connection_lost(self, peer: Atom) -> None:
        """``peer`` went down: tell the others, unless the drop was asked for."""
        if peer in self.removing:
            self.removing.discard(peer)
            return
        me = self.node.name
        message = (LOST_CONNECTION, me, self.node.creation, next(self._op_ids), peer)
        self._multicast(message, but=peer)

    def on_lost_connection(self, reporter: Any, x_creation: Any, op_id: Any,
                           lost: Any) -> None:
        """``reporter`` lost its connection to ``lost``."""
        if not (isinstance(reporter, Atom) and isinstance(lost, Atom) and type(op_id) is int):
            self._malformed.log("global: malformed lost_connection from %s ignored",
                                loggable(reporter))
            return
        key = (reporter, lost)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and seen[0] == x_creation and op_id <= seen[1] and seen[2] > now:
            return  # an echo of one already handled
        self._remember(key, (x_creation, op_id, now + REMEMBER_FOR), now)
        self._multicast((LOST_CONNECTION, reporter, x_creation, op_id, lost), but=reporter)
        remove = reporter if lost is self.node.name else lost
        if remove is self.node.name or not self._potentially_known(remove):
            return
        log.warning("global at node %s requested disconnect from node %s in order to prevent "
                    "overlapping partitions", self.node.name.name, remove.name)
        self._send(remove, (REMOVE_CONNECTION, self.node.name))
        self.removing.add(remove)
        self._forget(remove)

    def on_remove_connection(self, peer: Any) -> None:
        """``peer`` asks this node to drop their connection."""
        if not isinstance(peer, Atom) or not self._potentially_known(peer):
            return
        log.warning("global at node %s disconnected node %s in order to prevent overlapping "
                    "partitions", self.node.name.name, peer.name)
        self.removing.add(peer)
        self._forget(peer)
        if not self.node.disconnect(peer):
            self.removing.discard(peer)  # no nodedown will come to clear it

    def _potentially_known(self, peer: Atom) -> bool:
        return peer in self._known() or self.node.connection(peer) is not None

    def _multicast(self, message: Any, *, but: Atom) -> None:
        for peer in self._known():
            if peer is not but:
                self._send(peer, message)

    def _send(self, peer: Atom, message: Any) -> None:
        """A plain message to ``peer``'s global_name_server, only over a live connection (as
        global's volatile sends: this never connects)."""
        if self.node.connection(peer) is not None:
            self.node.send((GNS, peer), message)

    def _remember(self, key: tuple[Atom, Atom], value: tuple[Any, int, float],
                  now: float) -> None:
        seen = self._seen
        seen[key] = value
        if len(seen) > REMEMBER_AT_MOST:
            for old in [k for k, v in seen.items() if v[2] <= now]:
                del seen[old]
            while len(seen) > REMEMBER_AT_MOST:
                del seen[next(iter(seen))]
