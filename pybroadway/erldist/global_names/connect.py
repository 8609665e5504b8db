"""``global``'s connect protocol (version 8), one session per peer: ``init_connect`` →
``lock_set`` → ``exchange`` → ``resolved``, then ``new_nodes`` / ``in_sync`` for the rest of
the cluster. Each peer's progress is a :class:`PeerSync` record."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from typing import Any

from pybroadway._throttle import Throttle
from pybroadway.erldist import flags as dflags
from pybroadway.erldist.global_names.locker import PartitionLocker
from pybroadway.erldist.global_names.peer_sync import PeerSync
from pybroadway.erldist.global_names.protocol import (
    GNS,
    INITIATE,
    LOCKED,
    PYBROADWAY,
    UNUSED,
    VSN,
    by_name,
    node_list,
)
from pybroadway.term import Atom, Pid, loggable
from pybroadway.term.atoms import GEN_CAST, UNDEFINED

log = logging.getLogger("pybroadway.erldist.global")

_tags = itertools.count(-576460752303423488 + random.randrange(1 << 40))


class ConnectProtocol(PartitionLocker):
    """The connect sessions with every visible peer, and who is in sync."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: dict[Atom, PeerSync] = {}
        self._sync_waiters: list[asyncio.Future[None]] = []
        self._stale = Throttle(log, logging.INFO, "stale global messages")

    # -- the cluster as this node sees it ----------------------------------------------------

    def visible_nodes(self) -> list[Atom]:
        """Connected nodes that take part in global (hidden peers are ignored)."""
        nodes = []
        for peer in self.node.nodes():
            connection = self.node.connection(peer)
            if connection is not None and connection.flags & dflags.PUBLISHED:
                nodes.append(peer)
        return nodes

    def known_nodes(self) -> list[Atom]:
        """The cluster's other nodes, synced or being connected to, sorted by name."""
        return sorted((peer for peer, sync in self.peers.items() if sync.known), key=by_name)

    def _known_list(self) -> list[tuple[Atom, int]]:
        return [(peer, VSN) for peer in self.known_nodes()]

    def _peer(self, peer: Atom) -> PeerSync:
        sync = self.peers.get(peer)
        if sync is None:
            sync = self.peers[peer] = PeerSync()
        return sync

    def _tag_my(self, peer: Any) -> int | None:
        sync = self.peers.get(peer)
        return sync.sync_tag_my if sync is not None else None

    def _cast(self, peer: Atom, request: Any) -> None:
        self.send((GNS, peer), (GEN_CAST, request))

    # -- global:sync() -----------------------------------------------------------------------

    def _all_synced(self) -> bool:
        for peer in self.visible_nodes():
            sync = self.peers.get(peer)
            if sync is None or not sync.synced:
                return False
        return all(sync.synced for sync in self.peers.values() if sync.known)

    def _wake_syncers(self) -> None:
        if not self._sync_waiters:
            return
        if self._all_synced():
            waiters, self._sync_waiters = self._sync_waiters, []
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    async def wait_synced(self, timeout: float) -> None:
        """Wait until every visible connected node, and every cluster member learned from
        them, has completed the connect protocol (or gone down)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sync_waiters.append(future)
        self._wake_syncers()
        async with asyncio.timeout(timeout):
            await future

    # -- init_connect ------------------------------------------------------------------------

    def _start_connect(self, peer: Atom) -> None:
        tag = next(_tags)
        sync = self._peer(peer)
        self._drop_lock(sync)
        sync.new_session(tag)
        assert self.locker is not None
        self._cast(peer, (Atom("init_connect"), (VSN, tag), self.node.name,
                          (Atom("locker"), Atom("no_longer_a_pid"), {PYBROADWAY: 1},
                           self.locker.pid)))
        parked, sync.pre_connect = sync.pre_connect, None
        if parked is not None:
            self._on_init_connect(parked[0], peer, parked[1])

    def _on_init_connect(self, vsn_tag: Any, peer: Any, init_msg: Any) -> None:
        if type(vsn_tag) is not tuple or len(vsn_tag) != 2 or not isinstance(peer, Atom):
            self._unexpected.log("global: malformed init_connect from %s ignored",
                                 loggable(peer))
            return
        sync = self._peer(peer)
        if sync.sync_tag_my is None:
            # No session of ours with the peer: as global.erl does, it is parked, unanswered,
            # until one starts (at its nodeup, if the peer is not known by then). A peer that
            # is known already (it was synced through another node) is not answered at all:
            # an init_connect_ack would reach it after our in_sync had ended its session, and
            # the tags it does not know make it restart the connect, which drops all our
            # names there (OTP 28's restart_connect deletes the node's resources).
            sync.pre_connect = (vsn_tag, init_msg)
            return
        sync.sync_tag_his = vsn_tag[1]
        if type(init_msg) is tuple and len(init_msg) == 4 and type(init_msg[3]) is Pid:
            sync.locker = init_msg[3]
        self.send((GNS, peer), (Atom("init_connect_ack"), self.node.name, vsn_tag[1],
                                sync.sync_tag_my))
        if type(init_msg) is tuple and len(init_msg) == 4 and isinstance(init_msg[2], dict) \
                and PYBROADWAY in init_msg[2]:
            sync.pybroadway = True
        self._maybe_initiate(peer, sync)

    def _on_init_connect_ack(self, peer: Any, my_tag: Any) -> None:
        if self._tag_my(peer) != my_tag:
            self._stale.log("global: stale init_connect_ack from %s ignored", loggable(peer))

    def _on_cancel_connect(self, peer: Any, my_tag: Any) -> None:
        if isinstance(peer, Atom) and self._tag_my(peer) == my_tag \
                and peer in self.visible_nodes() and not self._peer(peer).synced:
            self._start_connect(peer)

    # -- the lock step (what global.erl's locker does) ---------------------------------------

    # A BEAM peer's locker starts the lock step after the connect; another Python node's
    # does not. Between two Python nodes (they mark themselves in init_connect's known map,
    # which the BEAM ignores) the one with the smaller name starts it, as a locker's
    # select_node does: it locks its partition and the peer, then sends lock_set. The side
    # that gets a lock_set it did not ask for locks its own partition with the same id and
    # answers with its own (true, or false when a node refused). Both then send exchange.

    def _maybe_initiate(self, peer: Atom, sync: PeerSync) -> None:
        if sync.pybroadway and self.node.name.name < peer.name:
            self.deliver((INITIATE, peer, sync.sync_tag_my))

    def _schedule_initiate(self, peer: Atom) -> None:
        """Start the lock step again later, after the locker's wait (global.erl's
        ``loop_the_locker``: 0.2 s alone, else 1 s + 0.1 s per known node, at most 3 s),
        times 1 to 2 at random so that two Python nodes do not keep meeting."""
        known = len(self.known_nodes())
        wait = 0.2 if not known else min(1.0 + 0.1 * known, 3.0)
        asyncio.get_running_loop().call_later(wait * random.uniform(1, 2), self.deliver,
                                              (INITIATE, peer, self._tag_my(peer)))

    def _on_initiate(self, peer: Atom, tag: Any) -> None:
        sync = self.peers.get(peer)
        if (sync is None or sync.sync_tag_my != tag or sync.lock_set_sent or sync.locking
                or sync.synced or sync.known or sync.locker is None
                or sync.sync_tag_his is None):
            return
        if self.global_lock_set():
            self._schedule_initiate(peer)  # the locker waits while a global lock is held here
            return
        self._start_locking(peer, sync, sync.locker, [peer])

    def _on_lock_set(self, his_locker: Any, ok: Any, _his_known: Any, my_tag: Any) -> None:
        peer = his_locker.node if type(his_locker) is Pid else None
        if peer is None or self._tag_my(peer) != my_tag:
            return  # a stale session
        sync = self._peer(peer)
        if sync.synced or sync.sync_tag_his is None or sync.exchange_sent:
            return
        if sync.lock_set_sent:  # our lock_set went first: this is the answer to it
            if ok is True:
                self._lock_is_set(peer, sync)
            else:
                self._drop_lock(sync)
                sync.lock_set_sent = False
                self._schedule_initiate(peer)
        elif ok is True and not sync.locking:
            self._start_locking(peer, sync, his_locker, [])
        # else a lock_set false we did not ask for (ignored as global's locker does), or the
        # lock is being set already for this one

    def _start_locking(self, peer: Atom, sync: PeerSync, his_locker: Pid,
                       extra: list[Atom]) -> None:
        sync.locking = True
        self.node.start_task(
            self._lock_step(peer, sync.sync_tag_my, self.session_lock(his_locker), extra),
            name=f"global-lock-{peer.name}")

    async def _lock_step(self, peer: Atom, tag: Any, lock_id: Any, extra: list[Atom]) -> None:
        known = await self.lock_partition(lock_id, extra)
        self.deliver((LOCKED, peer, tag, lock_id, extra, known))

    def _on_locked(self, peer: Atom, tag: Any, lock_id: Any, extra: list[Atom],
                   known: list[Atom] | None) -> None:
        """The lock step's result: ``known`` is None when the lock could not be set, else the
        known nodes it was set on (with this node, and the peer if ``extra`` names it)."""
        assert self.locker is not None
        locked = None if known is None else list(dict.fromkeys([self.node.name, *extra,
                                                                 *known]))
        sync = self.peers.get(peer)
        if sync is None or sync.sync_tag_my != tag or not sync.locking:
            if locked is not None:
                self.release(lock_id, locked)  # the session is over: nothing to hold it for
            return
        sync.locking = False
        if locked is not None:
            sync.lock = (lock_id, locked)
        if extra:  # we started the lock step: lock_set, then wait for his
            if locked is None:
                self._schedule_initiate(peer)
                return
            sync.lock_set_sent = True
            self._cast(peer, (Atom("lock_set"), self.locker.pid, True, known,
                              sync.sync_tag_his))
            return
        self._cast(peer, (Atom("lock_set"), self.locker.pid, locked is not None,
                          self.known_nodes() if known is None else known, sync.sync_tag_his))
        if locked is not None:
            sync.lock_set_sent = True
            self._lock_is_set(peer, sync)

    def _lock_is_set(self, peer: Atom, sync: PeerSync) -> None:
        """Both partitions are locked: send our names, and take his if they came first."""
        sync.exchange_sent = True
        names = [(name, pid, method) for name, (pid, method, _) in self.table.items()]
        self._cast(peer, (Atom("exchange"), self.node.name, names, [], sync.sync_tag_his))
        saved, sync.saved_exchange = sync.saved_exchange, None
        if saved is not None:
            self._exchange(peer, sync, saved)

    def _drop_lock(self, sync: PeerSync) -> None:
        """Delete the session lock this node holds for ``sync``'s session, if any."""
        lock, sync.lock = sync.lock, None
        if lock is not None:
            self.release(*lock)

    def _end_session(self, sync: PeerSync) -> None:
        self._drop_lock(sync)
        sync.end_session()

    # -- exchange and resolved ---------------------------------------------------------------

    def _on_exchange(self, peer: Any, name_list: Any, my_tag: Any) -> None:
        if not isinstance(peer, Atom) or self._tag_my(peer) != my_tag:
            return
        sync = self._peer(peer)
        names = name_list if isinstance(name_list, list) else []
        if sync.exchange_sent:
            self._exchange(peer, sync, names)
        else:
            sync.saved_exchange = names  # our lock is not set yet: taken once it is

    def _exchange(self, peer: Atom, sync: PeerSync, names: list[Any]) -> None:
        ops, for_him = self.exchange_names(peer, names)
        self._cast(peer, (Atom("resolved"), self.node.name, for_him, self._known_list(),
                          UNUSED, [], sync.sync_tag_his))
        his_resolved = sync.saved_resolved
        if his_resolved is not None:
            sync.saved_resolved = None
            self._resolved(peer, ops + his_resolved[0], his_resolved[1])
        else:
            sync.save_ops = ops

    def _on_resolved(self, peer: Any, his_ops: Any, his_known: Any, my_tag: Any) -> None:
        if not isinstance(peer, Atom) or self._tag_my(peer) != my_tag:
            return
        his_ops = his_ops if isinstance(his_ops, list) else []
        sync = self._peer(peer)
        ops = sync.save_ops
        if ops is not None:
            sync.save_ops = None
            self._resolved(peer, ops + his_ops, his_known)
        else:
            sync.saved_resolved = (his_ops, his_known)

    def _resolved(self, peer: Atom, ops: list[Any], his_known: Any) -> None:
        self.do_ops(ops)
        sync = self._peer(peer)
        previously_known = [n for n, other in self.peers.items() if other.known and n is not peer]
        his_nodes = node_list(his_known)
        # The nodes he knows are synced through him now: any session with them ends, as
        # global.erl's resolved cancels their lockers.
        for other in his_nodes:
            other_sync = self.peers.get(other)
            if other is not peer and other_sync is not None \
                    and other_sync.sync_tag_my is not None:
                self._end_session(other_sync)
        sync.known = True
        sync.synced = True
        self._sync_others(his_nodes)
        lock = sync.lock
        sync.lock = None
        if previously_known:
            # new_nodes goes out while the session lock is still held on those nodes: a node
            # that holds another lock drops the names it brings.
            message: Any = (Atom("new_nodes"), self.node.name, ops, [],
                            [(n, VSN) for n in [peer, *his_nodes] if n is not self.node.name],
                            [(Atom("vsn"), VSN),
                             (Atom("lock"), lock[0] if lock is not None else UNDEFINED)])
            for other in previously_known:
                self._cast(other, message)
        if lock is not None:
            self.release(*lock)
        log.info("global: in sync with %s", peer.name)
        self._wake_syncers()

    # -- the rest of the cluster -------------------------------------------------------------

    def _on_new_nodes(self, ops: Any, his_new_nodes: Any) -> None:
        self.do_ops(ops)
        self._sync_others(node_list(his_new_nodes))

    def _sync_others(self, nodes: list[Atom]) -> None:
        for peer in nodes:
            if peer is self.node.name:
                continue
            sync = self._peer(peer)
            if sync.known:
                continue
            sync.known = True
            self.node.start_task(self._sync_other(peer), name=f"global-sync-{peer.name}")

    async def _sync_other(self, peer: Atom) -> None:
        if await self.node.connect(peer):
            self._cast(peer, (Atom("in_sync"), self.node.name, True))
        else:
            log.info("global at %s failed to connect to %s", self.node.name.name, peer.name)
            sync = self.peers.get(peer)
            if sync is not None:
                sync.known = False

    def _on_in_sync(self, peer: Atom) -> None:
        """The peer is in sync with us through a node of its partition (it got our names from
        there). As in global.erl it counts as synced, and any session of ours with it ends;
        it does not become known: the ``new_nodes`` that names it must still make us answer it
        with our own ``in_sync``, which it waits for."""
        sync = self._peer(peer)
        sync.synced = True
        self._end_session(sync)
        self._wake_syncers()
