"""``global``'s connect protocol (version 8), one session per peer: ``init_connect`` →
``lock_set`` → ``exchange`` → ``resolved``, then ``new_nodes`` / ``in_sync`` for the rest of
the cluster. Each peer's progress is a :class:`PeerSync` record."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from typing import Any

from pybroadway.erldist import flags as dflags
from pybroadway.erldist.global_names.peer_sync import PeerSync
from pybroadway.erldist.global_names.protocol import (
    GLOBAL,
    GNS,
    INITIATE,
    LOCKED,
    PYBROADWAY,
    UNUSED,
    VSN,
    by_name,
    node_list,
)
from pybroadway.erldist.global_names.requester import Requester
from pybroadway.erldist.global_names.tables import GlobalTables
from pybroadway.term import Atom, Pid, loggable
from pybroadway.term.atoms import GEN_CAST

log = logging.getLogger("pybroadway.erldist.global")

RETRY_LOCK_AFTER = 0.2
"""Seconds (1x to 2x, at random) before taking a busy session lock is tried again."""

_tags = itertools.count(-576460752303423488 + random.randrange(1 << 40))


class ConnectProtocol(GlobalTables):
    """The connect sessions with every visible peer, and who is in sync."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: dict[Atom, PeerSync] = {}
        self.locker: Requester | None = None
        self._sync_waiters: list[asyncio.Future[None]] = []
        self._lock_id: Any = None  # the latest session lock, named in new_nodes

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
        self._peer(peer).new_session(tag)
        assert self.locker is not None
        self._cast(peer, (Atom("init_connect"), (VSN, tag), self.node.name,
                          (Atom("locker"), Atom("no_longer_a_pid"), {PYBROADWAY: 1},
                           self.locker.pid)))

    def _on_init_connect(self, vsn_tag: Any, peer: Any, init_msg: Any) -> None:
        if type(vsn_tag) is not tuple or len(vsn_tag) != 2 or not isinstance(peer, Atom):
            log.warning("global: malformed init_connect from %s ignored", loggable(peer))
            return
        sync = self._peer(peer)
        sync.sync_tag_his = vsn_tag[1]
        if type(init_msg) is tuple and len(init_msg) == 4 and type(init_msg[3]) is Pid:
            sync.locker = init_msg[3]
        if sync.sync_tag_my is None:
            self._start_connect(peer)
        self.send((GNS, peer), (Atom("init_connect_ack"), self.node.name, vsn_tag[1],
                                sync.sync_tag_my))
        if type(init_msg) is tuple and len(init_msg) == 4 and isinstance(init_msg[2], dict) \
                and PYBROADWAY in init_msg[2]:
            sync.pybroadway = True
        self._maybe_initiate(peer, sync)

    def _on_init_connect_ack(self, peer: Any, my_tag: Any) -> None:
        if self._tag_my(peer) != my_tag:
            log.info("global: stale init_connect_ack from %s ignored", loggable(peer))

    def _on_cancel_connect(self, peer: Any, my_tag: Any) -> None:
        if isinstance(peer, Atom) and self._tag_my(peer) == my_tag \
                and peer in self.visible_nodes() and not self._peer(peer).synced:
            self._start_connect(peer)

    # -- the lock step -----------------------------------------------------------------------

    def _on_lock_set(self, his_locker: Any, ok: Any, _his_known: Any, my_tag: Any) -> None:
        peer = his_locker.node if type(his_locker) is Pid else None
        if peer is None or self._tag_my(peer) != my_tag or ok is not True:
            return  # a stale session, or the peer failed to lock and will retry
        sync = self._peer(peer)
        his_tag = sync.sync_tag_his
        if his_tag is None:
            return
        assert self.locker is not None
        self._lock_id = self._session_lock(his_locker)
        if not sync.lock_set_sent:
            sync.lock_set_sent = True
            self._cast(peer, (Atom("lock_set"), self.locker.pid, True, [], his_tag))
        if not sync.exchange_sent:
            sync.exchange_sent = True
            names = [(name, pid, method) for name, (pid, method, _) in self.table.items()]
            self._cast(peer, (Atom("exchange"), self.node.name, names, [], his_tag))

    def _session_lock(self, his_locker: Pid) -> Any:
        """The lock of a connect session: ``{global, sorted([MyLocker, HisLocker])}``, the
        same id on both sides, so either may take it."""
        assert self.locker is not None
        ids = sorted([self.locker.pid, his_locker], key=lambda p: (p.node.name, p.id,
                                                                  p.serial))
        return (GLOBAL, ids)

    # A BEAM peer's locker starts the lock step after the connect; another Python node's
    # does not. Between two Python nodes (they mark themselves in init_connect's known map,
    # which the BEAM ignores) the one with the smaller name takes the session lock on both
    # sides and sends lock_set; the other answers with its own and the exchange follows.

    def _maybe_initiate(self, peer: Atom, sync: PeerSync) -> None:
        if sync.pybroadway and self.node.name.name < peer.name:
            self.deliver((INITIATE, peer, sync.sync_tag_my))

    def _schedule_initiate(self, peer: Atom) -> None:
        """Try the lock step again a little later (the lock is busy)."""
        tag = self._tag_my(peer)
        delay = random.uniform(RETRY_LOCK_AFTER, 2 * RETRY_LOCK_AFTER)
        asyncio.get_running_loop().call_later(delay, self.deliver, (INITIATE, peer, tag))

    def _on_initiate(self, peer: Atom, tag: Any) -> None:
        sync = self.peers.get(peer)
        if (sync is None or sync.sync_tag_my != tag or sync.lock_set_sent or sync.synced
                or sync.locker is None or sync.sync_tag_his is None or self.locker is None):
            return
        lock_id = self._session_lock(sync.locker)
        if not self.set_lock(lock_id, self.locker.pid):
            self._schedule_initiate(peer)  # another session holds the lock: later
            return
        self.node.start_task(self._take_lock(peer, tag, lock_id),
                             name=f"global-lock-{peer.name}")

    async def _take_lock(self, peer: Atom, tag: Any, lock_id: Any) -> None:
        assert self.locker is not None
        replies = await self.locker.multi_call([peer], (Atom("set_lock"), lock_id), 5.0)
        self.deliver((LOCKED, peer, tag, lock_id, replies.get(peer) is True))

    def _on_locked(self, peer: Atom, tag: Any, lock_id: Any, ok: bool) -> None:
        assert self.locker is not None
        sync = self.peers.get(peer)
        current = sync is not None and sync.sync_tag_my == tag and not sync.synced
        if sync is None or not ok or not current or sync.lock_set_sent:
            self.del_lock(lock_id, self.locker.pid)
            if ok:
                self._release(peer, lock_id)
            if current and not ok:
                self._schedule_initiate(peer)
            return
        sync.initiated_lock = lock_id
        self._lock_id = lock_id
        sync.lock_set_sent = True
        self._cast(peer, (Atom("lock_set"), self.locker.pid, True, [], sync.sync_tag_his))

    def _release(self, peer: Atom, lock_id: Any) -> None:
        assert self.locker is not None
        self.node.start_task(self.locker.multi_call([peer], (Atom("del_lock"), lock_id), 5.0),
                             name=f"global-unlock-{peer.name}")

    # -- exchange and resolved ---------------------------------------------------------------

    def _on_exchange(self, peer: Any, name_list: Any, my_tag: Any) -> None:
        if not isinstance(peer, Atom) or self._tag_my(peer) != my_tag:
            return
        sync = self._peer(peer)
        ops, for_him = self.exchange_names(peer, name_list if isinstance(name_list, list)
                                           else [])
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
        lock_id, sync.initiated_lock = sync.initiated_lock, None
        if lock_id is not None and self.locker is not None:
            self.del_lock(lock_id, self.locker.pid)
            self._release(peer, lock_id)
        previously_known = [n for n, other in self.peers.items() if other.known and n is not peer]
        new_nodes = [peer, *node_list(his_known)]
        sync.known = True
        sync.synced = True
        self._sync_others(node_list(his_known))
        if previously_known:
            assert self.locker is not None
            lock_id = self._lock_id if self._lock_id is not None else (GLOBAL,
                                                                       [self.locker.pid])
            message: Any = (Atom("new_nodes"), self.node.name, ops, [],
                            [(n, VSN) for n in new_nodes if n is not self.node.name],
                            [(Atom("vsn"), VSN), (Atom("lock"), lock_id)])
            for other in previously_known:
                self._cast(other, message)
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
        lock_id = sync.initiated_lock
        sync.end_session()
        if lock_id is not None and self.locker is not None:
            self.del_lock(lock_id, self.locker.pid)
            self._release(peer, lock_id)
        self._wake_syncers()
