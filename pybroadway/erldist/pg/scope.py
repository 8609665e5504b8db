"""The server of a ``pg`` scope: kernel ``pg.erl``'s protocol with the scopes of the same name
on other nodes.

- On a nodeup (visible, or any when hidden nodes are included) it sends ``{discover, Self}``
  to ``{Scope, Node}``; it sends the same to every connected node when it starts.
- ``{discover, Peer}`` (or OTP 28's ``{discover, Peer, Vsn}``) is answered with
  ``{'$gen_cast', {sync, Self, [{Group, LocalPids}]}}``; a new peer is monitored and sent
  ``{discover, Self}``.
- ``{'$gen_cast', {sync, Peer, Groups}}`` replaces what ``Peer`` holds here;
  ``{join, Peer, Group, PidOrPids}`` and ``{leave, Peer, PidOrPids, Groups}`` change it;
  a peer scope that goes DOWN (or whose node goes down) takes all its members with it.
- Local members are monitored; when one exits, ``{leave, Self, Pid, Groups}`` goes to every
  peer.

A peer's scope crashes (``badarg``) on any message its clauses do not expect, so this server
sends only the shapes above, only to peers that announced themselves, only ``leave`` for
memberships it announced, and never over a connection that is not there (``noconnect``).
What it receives it checks, and a message it cannot use is logged and dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from pybroadway._throttle import Throttle
from pybroadway.erldist import flags as dflags
from pybroadway.erldist.pg.groups import ScopeTable, group_key, take
from pybroadway.erldist.process import Process
from pybroadway.term import Atom, Pid, Reference, loggable
from pybroadway.term.atoms import DOWN, GEN_CAST

__all__ = ["DEFAULT_MAX_REMOTE_MEMBERS", "MAX_SCOPES_PER_NODE", "ScopeServer"]

log = logging.getLogger("pybroadway.erldist.pg")

DISCOVER = Atom("discover")
SYNC = Atom("sync")
JOIN = Atom("join")
LEAVE = Atom("leave")
NODE_EVENT = Atom("$pg_node_event")  # our own nodeup/nodedown, through the mailbox

DEFAULT_MAX_REMOTE_MEMBERS = 100_000
"""Members the scopes of one peer node may make us hold; more are ignored (and logged)."""

MAX_SCOPES_PER_NODE = 4
"""Scope processes of one peer node we follow at once (a real node has one; a restarted one
has a second for a moment)."""


class _Peer:
    """A remote scope process: our monitor on it and the members it announced."""

    __slots__ = ("groups", "ref")

    def __init__(self, ref: Reference) -> None:
        self.ref = ref
        self.groups: dict[bytes, list[Pid]] = {}


class ScopeServer(Process):
    """The process registered under the scope's name. ``table`` outlives it (see
    :class:`~pybroadway.erldist.pg.groups.ScopeTable`): a restarted server takes back the
    memberships of this node's processes that still run, and discovers its peers again."""

    def __init__(self, scope: Atom, table: ScopeTable, *,
                 max_remote_members: int = DEFAULT_MAX_REMOTE_MEMBERS,
                 discover_hidden: bool | None = None) -> None:
        super().__init__()
        self.scope = scope
        self.table = table
        self.max_remote_members = max_remote_members
        self._discover_hidden = discover_hidden
        self._peers: dict[Pid, _Peer] = {}
        self._held: Counter[Atom] = Counter()  # peer node -> members it makes us hold
        self._local_refs: dict[Pid, Reference] = {}
        self._unsubscribe: Any = None
        self._dropped = Throttle(log, logging.WARNING, "unusable pg messages", burst=3)
        self._over_cap = Throttle(log, logging.ERROR, "pg member cap hits", burst=1,
                                  interval=10.0)

    # -- life ---------------------------------------------------------------------------------

    def _start(self, node: Any, pid: Pid) -> None:
        super()._start(node, pid)
        assert self._task is not None
        self._task.add_done_callback(lambda _task: self._stopped())
        # Ready before the task runs, so that a join right after the start is served.
        if self._discover_hidden is None:
            self._discover_hidden = node.hidden
        for member in list(self.table.local):
            if node.process(member) is None:
                for key in self.table.local.pop(member):
                    self.table.remove(key, [member], local=True)
            else:
                self._local_refs[member] = self.monitor(member)
        self._unsubscribe = node.monitor_nodes(self._node_event)
        for peer in node.nodes():
            self._node_event(peer, True)

    async def run(self) -> None:
        try:
            while True:
                message = await self.receive()
                try:
                    self._handle(message)
                except Exception:
                    log.exception("pg %s: message %s failed, ignored", self.scope.name,
                                  loggable(message))
        finally:
            self._stopped()

    def _stopped(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for peer in list(self._peers):
            self._forget_peer(peer)

    # -- this node's members (called by the Scope handle, in the caller's turn) ----------------

    def join(self, group: Any, pids: list[Pid]) -> None:
        """``pids`` (this node's) join ``group``; each peer is sent ``{join, …}``."""
        if not pids:
            return
        key = group_key(group)
        for pid in pids:
            groups = self.table.local.setdefault(pid, [])
            if not groups:
                self._local_refs[pid] = self.monitor(pid)
            groups.append(key)
        self.table.add(key, group, pids, local=True)
        self._broadcast((JOIN, self.pid, group, pids[0] if len(pids) == 1 else pids))

    def leave(self, group: Any, pids: list[Pid]) -> bool:
        """One membership of each of ``pids`` in ``group`` ends; False if none had one. Peers
        are sent ``{leave, …}`` naming only the pids that were members."""
        key = group_key(group)
        leaving = []
        for pid in pids:
            groups = self.table.local.get(pid)
            if groups is None or key not in groups:
                continue
            groups.remove(key)
            if not groups:
                del self.table.local[pid]
                ref = self._local_refs.pop(pid, None)
                if ref is not None:
                    self.demonitor(ref)
            leaving.append(pid)
        if not leaving:
            return False
        self.table.remove(key, leaving, local=True)
        self._broadcast((LEAVE, self.pid, leaving[0] if len(leaving) == 1 else leaving,
                         [group]))
        return True

    def _local_down(self, pid: Pid) -> None:
        self._local_refs.pop(pid, None)
        keys = self.table.local.pop(pid, None)
        if not keys:
            return
        groups = [self.table.term(key) for key in keys]
        for key in keys:
            self.table.remove(key, [pid], local=True)
        self._broadcast((LEAVE, self.pid, pid, groups))

    # -- sending ------------------------------------------------------------------------------

    def _connected(self, node: Atom) -> bool:
        return self.node.connection(node) is not None

    def _send(self, to: Any, message: Any) -> None:
        """``erlang:send(To, Msg, [noconnect])``: dropped when there is no connection."""
        if self._connected(to.node if type(to) is Pid else to[1]):
            self.send(to, message)

    def _broadcast(self, message: Any) -> None:
        for peer in self._peers:
            self._send(peer, message)

    # -- nodes --------------------------------------------------------------------------------

    def _node_event(self, node: Atom, up: bool) -> None:
        self.deliver((NODE_EVENT, node, up))

    def _on_node(self, node: Atom, up: bool) -> None:
        if not up:
            for peer in [p for p in self._peers if p.node is node]:
                self._forget_peer(peer)
            return
        connection = self.node.connection(node)
        if connection is not None and (connection.flags & dflags.PUBLISHED
                                       or self._discover_hidden):
            self._send((self.scope, node), (DISCOVER, self.pid))

    # -- messages -----------------------------------------------------------------------------

    def _handle(self, message: Any) -> None:
        if type(message) is not tuple or not message:
            self._drop(message)
            return
        kind, size = message[0], len(message)
        if kind is JOIN and size == 4:
            self._on_join(message[1], message[2], message[3])
        elif kind is LEAVE and size == 4:
            self._on_leave(message[1], message[2], message[3])
        elif kind is GEN_CAST and size == 2 and type(message[1]) is tuple \
                and len(message[1]) == 3 and message[1][0] is SYNC:
            self._on_sync(message[1][1], message[1][2])
        elif kind is DISCOVER and size in (2, 3):
            self._on_discover(message[1])
        elif kind is DOWN and size == 5:
            self._on_down(message[1], message[3])
        elif kind is NODE_EVENT and size == 3:
            self._on_node(message[1], message[2])
        else:
            self._drop(message)

    def _drop(self, message: Any) -> None:
        self._dropped.log("pg %s: unusable message %s dropped", self.scope.name,
                          loggable(message))

    def _usable_peer(self, peer: Any) -> bool:
        """A remote scope we may follow: a pid of another node we are connected to."""
        return type(peer) is Pid and peer.node is not self.node.name \
            and self._connected(peer.node)

    def _on_discover(self, peer: Any) -> None:
        if not self._usable_peer(peer):
            self._drop((DISCOVER, peer))
            return
        self._send(peer, (GEN_CAST, (SYNC, self.pid, self.table.local_groups())))
        if peer not in self._peers and self._follow(peer):
            self._send(peer, (DISCOVER, self.pid))

    def _follow(self, peer: Pid) -> bool:
        """Monitor ``peer`` and keep its members; False (logged) past the cap of scopes."""
        if sum(1 for p in self._peers if p.node is peer.node) >= MAX_SCOPES_PER_NODE:
            self._over_cap.log("pg %s: node %s has %d scope processes followed already; %s "
                               "ignored", self.scope.name, peer.node.name,
                               MAX_SCOPES_PER_NODE, peer)
            return False
        self._peers[peer] = _Peer(self.monitor(peer))
        return True

    def _on_sync(self, peer: Any, groups: Any) -> None:
        if not self._usable_peer(peer) or type(groups) is not list or not all(
                type(g) is tuple and len(g) == 2 and type(g[1]) is list for g in groups):
            self._drop((SYNC, peer, groups))
            return
        state = self._peers.get(peer)
        if state is None:
            if not self._follow(peer):
                return
            state = self._peers[peer]
        announced = {group_key(group): (group, self._remote_pids(pids))
                     for group, pids in groups}
        for key in [k for k in state.groups if k not in announced]:
            self._remote_leave(peer, state, key, list(state.groups[key]))
        for key, (group, pids) in announced.items():
            old = Counter(state.groups.get(key, ()))
            new = Counter(pids)
            gone = list((old - new).elements())
            if gone:
                self._remote_leave(peer, state, key, gone)
            came = list((new - old).elements())
            if came:
                self._remote_join(peer, state, key, group, came)

    def _on_join(self, peer: Any, group: Any, pid_or_pids: Any) -> None:
        state = self._peers.get(peer) if type(peer) is Pid else None
        if state is None:  # not (or no longer) a peer: pg ignores it too
            log.debug("pg %s: join from %s, not a peer scope, ignored", self.scope.name,
                      loggable(peer))
            return
        pids = self._remote_pids(pid_or_pids)
        if pids:
            self._remote_join(peer, state, group_key(group), group, pids)

    def _on_leave(self, peer: Any, pid_or_pids: Any, groups: Any) -> None:
        state = self._peers.get(peer) if type(peer) is Pid else None
        if state is None or type(groups) is not list:
            log.debug("pg %s: leave from %s ignored", self.scope.name, loggable(peer))
            return
        pids = self._remote_pids(pid_or_pids)
        for group in groups:
            self._remote_leave(peer, state, group_key(group), pids)

    def _on_down(self, ref: Any, pid: Any) -> None:
        peer = self._peers.get(pid)
        if peer is not None and peer.ref == ref:
            self._forget_peer(pid)
        elif self._local_refs.get(pid) == ref:
            self._local_down(pid)

    # -- what peers make us hold ----------------------------------------------------------------

    def _remote_pids(self, pid_or_pids: Any) -> list[Pid]:
        """The pids of another node among ``pid_or_pids`` (a pid or a list)."""
        here = self.node.name
        if type(pid_or_pids) is Pid:
            return [pid_or_pids] if pid_or_pids.node is not here else []
        if type(pid_or_pids) is not list:
            return []
        return [p for p in pid_or_pids if type(p) is Pid and p.node is not here]

    def _remote_join(self, peer: Pid, state: _Peer, key: bytes, group: Any,
                     pids: list[Pid]) -> None:
        room = self.max_remote_members - self._held[peer.node]
        if len(pids) > room:
            self._over_cap.log(
                "pg %s: node %s would hold more than %d members here (max_remote_members); "
                "%d members of group %s ignored", self.scope.name, peer.node.name,
                self.max_remote_members, len(pids) - max(room, 0), loggable(group))
            pids = pids[:max(room, 0)]
            if not pids:
                return
        self._held[peer.node] += len(pids)
        state.groups.setdefault(key, []).extend(pids)
        self.table.add(key, group, pids, local=False)

    def _remote_leave(self, peer: Pid, state: _Peer, key: bytes, pids: list[Pid]) -> None:
        held = state.groups.get(key)
        if held is None:
            return
        leaving = take(held, pids)
        if not held:
            del state.groups[key]
        if leaving:
            self._held[peer.node] -= len(leaving)
            if self._held[peer.node] <= 0:
                del self._held[peer.node]
            self.table.remove(key, leaving, local=False)

    def _forget_peer(self, peer: Pid) -> None:
        state = self._peers.pop(peer, None)
        if state is None:
            return
        self.demonitor(state.ref)
        for key, pids in list(state.groups.items()):
            self._remote_leave(peer, state, key, list(pids))

    @property
    def peers(self) -> list[Pid]:
        """The remote scope processes followed now."""
        return list(self._peers)

    def held(self, node: Atom) -> int:
        """How many members the scopes of ``node`` make us hold."""
        return self._held[node]
