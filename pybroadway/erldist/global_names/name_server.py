"""The node's ``global_name_server`` process: it follows the visible peers coming and going,
and routes every call, cast and message to the table or the connect step it is for."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pybroadway._throttle import Throttle
from pybroadway.erldist import flags as dflags
from pybroadway.erldist.genserver import From
from pybroadway.erldist.global_names.connect import ConnectProtocol
from pybroadway.erldist.global_names.partitions import (
    LOST_CONNECTION,
    REMOVE_CONNECTION,
    PartitionGuard,
)
from pybroadway.erldist.global_names.protocol import (
    INITIATE,
    LOCKED,
    NODE_EVENT,
    YES,
    is_tagged,
)
from pybroadway.erldist.global_names.requester import Requester
from pybroadway.erldist.global_names.tables import LocalNames, local_names
from pybroadway.term import Atom, Pid, loggable
from pybroadway.term.atoms import DOWN, ERROR, OK

if TYPE_CHECKING:
    from pybroadway.erldist.process import ProcessHost

log = logging.getLogger("pybroadway.erldist.global")


class GlobalNameServer(ConnectProtocol):
    """The node's ``global_name_server``: the BEAM connect protocol, locks and the name table.

    It never crashes on a bad message (it logs and ignores it, through throttles: a peer can
    send any number) and answers every call.
    """

    def __init__(self) -> None:
        super().__init__()
        self._failed = Throttle(log, logging.ERROR, "failed global messages")
        self._unsubscribe: Any = None
        self.registrar: Requester | None = None
        self.transaction = asyncio.Lock()

    # -- start -------------------------------------------------------------------------------

    def _start(self, node: ProcessHost, pid: Pid) -> None:
        super()._start(node, pid)
        # The helpers exist as soon as the node has started, so register_name works from the
        # very first moment, before this server's task has run.
        # Linked: they end with this server, and it ends with them, as global's locker and
        # registrar do.
        self.locker = node.spawn(Requester(), link=pid)
        self.registrar = node.spawn(Requester(), link=pid)
        self.partitions = PartitionGuard(node, self.known_nodes, self._forget)

    async def init(self) -> None:
        memory = local_names(self.node)
        memory.servers += 1
        if memory.servers > 1:
            self._restarted(memory)
        self._unsubscribe = self.node.monitor_nodes(self._node_event)
        for peer in self.node.nodes():  # connections made before this process ran
            self._node_event(peer, True)

    def _restarted(self, memory: LocalNames) -> None:
        """A new server of a running node: the names of this node's processes are taken back,
        and the connected nodes are dropped, since they hold themselves synced with the server
        that is gone and would never sync with this one; they sync again when they reconnect
        (on the BEAM a global that fails takes its node down, to the same effect)."""
        for name, (pid, method) in list(memory.names.items()):
            if self.node.process(pid) is not None:
                self.insert_name(name, pid, method)
            else:
                del memory.names[name]
        visible = self.visible_nodes()
        log.warning("global: name server restarted; %d names of this node kept, dropping the "
                    "connections to %d nodes so that they sync again", len(self.table),
                    len(visible))
        for peer in visible:
            self.node.disconnect(peer)

    async def terminate(self, reason: Any) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _node_event(self, peer: Atom, up: bool) -> None:
        if up:
            connection = self.node.connection(peer)
            if connection is None or not connection.flags & dflags.PUBLISHED:
                return  # global ignores hidden nodes
        self.deliver((NODE_EVENT, peer, up))

    def _on_node(self, peer: Atom, up: bool) -> None:
        if up:
            sync = self.peers.get(peer)
            if sync is None or (not sync.known and sync.sync_tag_my is None):
                self._start_connect(peer)
        else:
            if peer in self.peers or peer in self.partitions.removing:
                self.partitions.connection_lost(peer)
            self._forget(peer)
        self._wake_syncers()

    def _forget(self, peer: Atom) -> None:
        sync = self.peers.pop(peer, None)
        if sync is not None:
            self._drop_lock(sync)  # the locker's cancel on a nodedown
        self.drop_node(peer)

    # -- calls -------------------------------------------------------------------------------

    def handle_call(self, request: Any, from_: From) -> Any:
        try:
            return self._call(request, from_)
        except Exception:
            self._failed.log("global: call %s failed", loggable(request), exc_info=True)
            return (ERROR, Atom("internal_error"))

    def _call(self, request: Any, from_: From) -> Any:
        kind = request[0] if type(request) is tuple and request else request
        if is_tagged(request, Atom("set_lock"), 2) and type(request[1]) is tuple \
                and len(request[1]) == 2:
            return self.set_lock(request[1], from_.pid)
        if is_tagged(request, Atom("del_lock"), 2) and type(request[1]) is tuple \
                and len(request[1]) == 2:
            self.del_lock(request[1], from_.pid)
            return True
        if is_tagged(request, Atom("register"), 4) and type(request[2]) is Pid:
            if self.lock_still_set(from_.pid):
                self.insert_name(request[1], request[2], request[3])
            return YES
        if is_tagged(request, Atom("register_ext"), 5) and type(request[2]) is Pid:
            if self.lock_still_set(from_.pid):
                self.insert_name(request[1], request[2], request[3])
            return YES
        if is_tagged(request, Atom("unregister"), 2):
            self.delete_name(request[1])
            return OK
        if kind is Atom("get_known"):
            return self.known_nodes()
        self._unexpected.log("global: unknown call %s from %s answered with an error",
                             loggable(request), loggable(from_.pid))
        return (ERROR, (Atom("unknown_call"), request))

    # -- casts -------------------------------------------------------------------------------

    def handle_cast(self, request: Any) -> None:
        try:
            self._cast_in(request)
        except Exception:
            self._failed.log("global: cast %s failed, ignored", loggable(request),
                             exc_info=True)

    def _cast_in(self, request: Any) -> None:
        kind = request[0] if type(request) is tuple and request else None
        if is_tagged(request, Atom("init_connect"), 4):
            self._on_init_connect(*request[1:])
        elif is_tagged(request, Atom("lock_set"), 5):
            self._on_lock_set(*request[1:])
        elif is_tagged(request, Atom("exchange"), 5):
            self._on_exchange(request[1], request[2], request[4])
        elif is_tagged(request, Atom("resolved"), 7):
            self._on_resolved(request[1], request[2], request[3], request[6])
        elif is_tagged(request, Atom("new_nodes"), 6):
            self._on_new_nodes(request[2], request[4])
        elif is_tagged(request, Atom("in_sync"), 3) and isinstance(request[1], Atom):
            self._on_in_sync(request[1])
        elif kind in (Atom("async_del_name"), Atom("async_del_lock")):
            pass
        else:
            self._unexpected.log("global: unknown cast %s ignored", loggable(request))

    # -- plain messages ----------------------------------------------------------------------

    def handle_info(self, message: Any) -> None:
        try:
            self._info(message)
        except Exception:
            self._failed.log("global: message %s failed, ignored", loggable(message),
                             exc_info=True)

    def _info(self, message: Any) -> None:
        if type(message) is not tuple or not message:
            self._unexpected.log("global: unknown message %s ignored", loggable(message))
            return
        kind = message[0]
        if kind is NODE_EVENT:
            self._on_node(message[1], message[2])
        elif kind is INITIATE:
            self._on_initiate(message[1], message[2])
        elif kind is LOCKED:
            self._on_locked(*message[1:])
        elif kind is DOWN and len(message) == 5:
            self.monitored_down(message[1])
        elif is_tagged(message, Atom("init_connect_ack"), 4):
            self._on_init_connect_ack(message[1], message[2])
        elif is_tagged(message, Atom("cancel_connect"), 3):
            self._on_cancel_connect(message[1], message[2])
        elif is_tagged(message, REMOVE_CONNECTION, 2):
            self.partitions.on_remove_connection(message[1])
        elif is_tagged(message, LOST_CONNECTION, 5):
            self.partitions.on_lost_connection(*message[1:])
        else:
            self._unexpected.log("global: unknown message %s ignored", loggable(message))
