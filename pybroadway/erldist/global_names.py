"""``:global`` for a Python node: the ``global_name_server`` process (protocol version 8) and a
small API over it.

Every visible pybroadway node runs ``global_name_server``. It takes part in the BEAM's connect
protocol (``init_connect`` → ``lock_set`` → ``exchange`` → ``resolved``, then ``new_nodes`` /
``in_sync`` for the rest of the cluster), answers the lock and registration calls other nodes
make, and keeps a table of every global name in the cluster.

    from pybroadway.erldist import global_names

    await global_names.register_name(node, "receiver", pid)     # str names become atoms
    pid = global_names.whereis_name(node, "beam_name")
    global_names.send(node, "beam_name", message)                # like :global.send/2
    await global_names.sync(node)                                # like :global.sync/0

Sending to ``{:global, name}`` is :func:`send` (``Node.send`` keeps its meaning of
``(name, node)`` for tuples).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from typing import TYPE_CHECKING, Any

from pybroadway.erldist import flags as dflags
from pybroadway.erldist.genserver import From, GenServer
from pybroadway.erldist.process import Process
from pybroadway.term import Atom, ExportFun, Pid, Reference
from pybroadway.term.atoms import DOWN, ERROR, GEN_CALL, GEN_CAST, KILL, OK

if TYPE_CHECKING:
    from pybroadway.erldist.node import Node

log = logging.getLogger("pybroadway.erldist.global")

VSN = 8
GNS = Atom("global_name_server")
GLOBAL = Atom("global")
YES = Atom("yes")
UNUSED = Atom("unused")
INSERT, DELETE = Atom("insert"), Atom("delete")
RANDOM_EXIT_NAME = ExportFun(GLOBAL, Atom("random_exit_name"), 3)
_NODE_EVENT = object()  # local marker for (marker, node, up) messages from monitor_nodes
_INITIATE = object()  # (marker, node, tag): time to start the lock step ourselves
_LOCKED = object()  # (marker, node, tag, lock_id, ok): our set_lock on the peer answered
RETRY_LOCK_AFTER = 0.2
"""Seconds (1x to 2x, at random) before taking a busy session lock is tried again."""
PYBROADWAY = Atom("pybroadway")  # the mark of a Python node in init_connect's known map

_tags = itertools.count(-576460752303423488 + random.randrange(1 << 40))


def _atom(name: Any) -> Any:
    return Atom(name) if isinstance(name, str) and not isinstance(name, Atom) else name


def _is(term: Any, tag: Atom, size: int) -> bool:
    return type(term) is tuple and len(term) == size and term[0] is tag


def _node_list(known: Any) -> list[Atom]:
    """Nodes of a known list, whose items are ``{Node, Vsn}`` (vsn ≥ 7) or bare atoms."""
    nodes: list[Atom] = []
    if isinstance(known, list):
        for item in known:
            if isinstance(item, Atom):
                nodes.append(item)
            elif type(item) is tuple and item and isinstance(item[0], Atom):
                nodes.append(item[0])
    return nodes


class _Requester(Process):
    """A pid that makes gen calls from a mailbox of its own (locks are tied to the caller's
    pid, so ``Node.call``'s anonymous caller will not do)."""

    async def run(self) -> None:
        await asyncio.get_running_loop().create_future()  # lives until the node stops

    async def multi_call(self, nodes: list[Atom], request: Any, timeout: float
                         ) -> dict[Atom, Any]:
        """Call ``global_name_server`` on every node; a node that is down is left out."""
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
                        log.info("global call %r to %s: %r", request, node.name, message[4])
                    else:
                        ref = message[0]
                        self.demonitor(ref)
                        replies[pending.pop(ref)] = message[1]
        except TimeoutError:
            log.warning("global call %r: no answer from %s", request,
                        [n.name for n in pending.values()])
            for ref in pending:
                self.demonitor(ref)
        return replies


class GlobalNameServer(GenServer):
    """The node's ``global_name_server``: the BEAM connect protocol, locks and the name table.

    It never crashes on a bad message (it logs and ignores it) and answers every call.
    """

    def __init__(self) -> None:
        super().__init__()
        # name -> (pid, method, monitor ref)
        self.table: dict[Any, tuple[Pid, Any, Reference]] = {}
        self._name_refs: dict[Reference, Any] = {}
        # resource id -> [requester id, {pid: monitor ref}]
        self.locks: dict[Any, list[Any]] = {}
        self._lock_refs: dict[Reference, Pid] = {}
        self.known: set[Atom] = set()
        self.synced: set[Atom] = set()
        self._my_tag: dict[Atom, int] = {}
        self._his_tag: dict[Atom, int] = {}
        self._his_locker: dict[Atom, Pid] = {}
        self._saved: dict[Atom, tuple[str, Any]] = {}
        # per connect session: whether our lock_set and exchange went out, and the lock we
        # took ourselves when we started the session (a peer that is not a BEAM waits for us)
        self._lock_sent: set[Atom] = set()
        self._exchanged: set[Atom] = set()
        self._initiated: dict[Atom, Any] = {}
        self._python_peers: set[Atom] = set()
        self._sync_waiters: list[asyncio.Future[None]] = []
        self._unsubscribe: Any = None
        self.locker: _Requester | None = None
        self.registrar: _Requester | None = None
        self.transaction = asyncio.Lock()

    # -- start -------------------------------------------------------------------------------

    def _start(self, node: Node, pid: Pid) -> None:
        super()._start(node, pid)
        # The helpers exist as soon as the node has started, so register_name works from the
        # very first moment, before this server's task has run.
        self.locker = node.spawn(_Requester())
        self.registrar = node.spawn(_Requester())

    async def init(self) -> None:
        self._unsubscribe = self.node.monitor_nodes(self._node_event)
        for peer in self.node.nodes():  # connections made before this process ran
            self._node_event(peer, True)

    async def terminate(self, reason: Any) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _node_event(self, peer: Atom, up: bool) -> None:
        if up:
            connection = self.node.connection(peer)
            if connection is None or not connection.flags & dflags.PUBLISHED:
                return  # global ignores hidden nodes
        self.deliver((_NODE_EVENT, peer, up))

    # -- helpers -----------------------------------------------------------------------------

    def visible_nodes(self) -> list[Atom]:
        """Connected nodes that take part in global (hidden peers are ignored)."""
        nodes = []
        for peer in self.node.nodes():
            connection = self.node.connection(peer)
            if connection is not None and connection.flags & dflags.PUBLISHED:
                nodes.append(peer)
        return nodes

    def _cast(self, peer: Atom, request: Any) -> None:
        self.send((GNS, peer), (GEN_CAST, request))

    def _known_list(self) -> list[tuple[Atom, int]]:
        return [(peer, VSN) for peer in sorted(self.known, key=lambda a: a.name)]

    def _wake_syncers(self) -> None:
        if not self._sync_waiters:
            return
        if set(self.visible_nodes()) | self.known <= self.synced:
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

    # -- the name table ----------------------------------------------------------------------

    def insert_name(self, name: Any, pid: Pid, method: Any) -> None:
        """Add ``name`` (replacing another pid's entry), monitoring ``pid``."""
        old = self.table.get(name)
        if old is not None:
            if old[0] == pid:
                return
            self.delete_name(name)
        ref = self.monitor(pid)
        self.table[name] = (pid, method, ref)
        self._name_refs[ref] = name

    def delete_name(self, name: Any) -> None:
        """Forget ``name`` and stop monitoring its pid."""
        entry = self.table.pop(name, None)
        if entry is not None:
            self._name_refs.pop(entry[2], None)
            self.demonitor(entry[2])

    def _do_ops(self, ops: Any) -> None:
        for op in ops if isinstance(ops, list) else []:
            try:
                if _is(op, INSERT, 2) and type(op[1]) is tuple and len(op[1]) == 3 \
                        and type(op[1][1]) is Pid:
                    self.insert_name(*op[1])
                elif _is(op, DELETE, 2):
                    self.delete_name(op[1])
                else:
                    log.warning("global: unknown name operation %r ignored", op)
            except TypeError:
                log.warning("global: name %r cannot be stored here, ignored", op)

    # -- locks -------------------------------------------------------------------------------

    def set_lock(self, lock_id: Any, pid: Pid) -> bool:
        """``{ResourceId, RequesterId}`` for ``pid``: False when another requester holds it."""
        resource, requester = lock_id
        entry = self.locks.get(resource)
        if entry is not None and entry[0] != requester:
            return False
        if entry is None:
            entry = self.locks[resource] = [requester, {}]
        if pid not in entry[1]:
            ref = self.monitor(pid)
            entry[1][pid] = ref
            self._lock_refs[ref] = pid
        return True

    def del_lock(self, lock_id: Any, pid: Pid) -> None:
        """Release ``pid``'s hold on ``{ResourceId, RequesterId}``."""
        resource, requester = lock_id
        entry = self.locks.get(resource)
        if entry is None or entry[0] != requester:
            return
        ref = entry[1].pop(pid, None)
        if ref is not None:
            self._lock_refs.pop(ref, None)
            self.demonitor(ref)
        if not entry[1]:
            del self.locks[resource]

    def _lock_holder_down(self, pid: Pid) -> None:
        for resource, entry in list(self.locks.items()):
            entry[1].pop(pid, None)
            if not entry[1]:
                del self.locks[resource]

    def lock_still_set(self, pid: Pid) -> bool:
        """A registration is accepted while its caller holds the global lock (or none is)."""
        entry = self.locks.get(GLOBAL)
        return entry is None or pid in entry[1]

    # -- calls -------------------------------------------------------------------------------

    def handle_call(self, request: Any, from_: From) -> Any:
        try:
            return self._call(request, from_)
        except Exception:
            log.exception("global: call %r failed", request)
            return (ERROR, Atom("internal_error"))

    def _call(self, request: Any, from_: From) -> Any:
        kind = request[0] if type(request) is tuple and request else request
        if _is(request, Atom("set_lock"), 2) and type(request[1]) is tuple \
                and len(request[1]) == 2:
            return self.set_lock(request[1], from_.pid)
        if _is(request, Atom("del_lock"), 2) and type(request[1]) is tuple \
                and len(request[1]) == 2:
            self.del_lock(request[1], from_.pid)
            return True
        if _is(request, Atom("register"), 4) and type(request[2]) is Pid:
            if self.lock_still_set(from_.pid):
                self.insert_name(request[1], request[2], request[3])
            return YES
        if _is(request, Atom("register_ext"), 5) and type(request[2]) is Pid:
            if self.lock_still_set(from_.pid):
                self.insert_name(request[1], request[2], request[3])
            return YES
        if _is(request, Atom("unregister"), 2):
            self.delete_name(request[1])
            return OK
        if kind is Atom("get_known"):
            return sorted(self.known, key=lambda a: a.name)
        log.warning("global: unknown call %r from %r answered with an error", request,
                    from_.pid)
        return (ERROR, (Atom("unknown_call"), request))

    # -- casts -------------------------------------------------------------------------------

    def handle_cast(self, request: Any) -> None:
        try:
            self._cast_in(request)
        except Exception:
            log.exception("global: cast %r failed, ignored", request)

    def _cast_in(self, request: Any) -> None:
        kind = request[0] if type(request) is tuple and request else None
        if _is(request, Atom("init_connect"), 4):
            self._on_init_connect(*request[1:])
        elif _is(request, Atom("lock_set"), 5):
            self._on_lock_set(*request[1:])
        elif _is(request, Atom("exchange"), 5):
            self._on_exchange(request[1], request[2], request[4])
        elif _is(request, Atom("resolved"), 7):
            self._on_resolved(request[1], request[2], request[3], request[6])
        elif _is(request, Atom("new_nodes"), 6):
            self._do_ops(request[2])
            self._sync_others(_node_list(request[4]))
        elif _is(request, Atom("in_sync"), 3) and isinstance(request[1], Atom):
            self._mark_synced(request[1])
        elif kind in (Atom("async_del_name"), Atom("async_del_lock")):
            pass
        else:
            log.warning("global: unknown cast %r ignored", request)

    def _start_connect(self, peer: Atom) -> None:
        tag = next(_tags)
        self._my_tag[peer] = tag
        self._saved.pop(peer, None)
        self._lock_sent.discard(peer)
        self._exchanged.discard(peer)
        assert self.locker is not None
        self._cast(peer, (Atom("init_connect"), (VSN, tag), self.node.name,
                          (Atom("locker"), Atom("no_longer_a_pid"), {PYBROADWAY: 1},
                           self.locker.pid)))

    def _on_init_connect(self, vsn_tag: Any, peer: Any, init_msg: Any) -> None:
        if type(vsn_tag) is not tuple or len(vsn_tag) != 2 or not isinstance(peer, Atom):
            log.warning("global: malformed init_connect from %r ignored", peer)
            return
        self._his_tag[peer] = vsn_tag[1]
        if type(init_msg) is tuple and len(init_msg) == 4 and type(init_msg[3]) is Pid:
            self._his_locker[peer] = init_msg[3]
        if peer not in self._my_tag:
            self._start_connect(peer)
        self.send((GNS, peer), (Atom("init_connect_ack"), self.node.name, vsn_tag[1],
                                self._my_tag[peer]))
        if type(init_msg) is tuple and len(init_msg) == 4 and isinstance(init_msg[2], dict) \
                and PYBROADWAY in init_msg[2]:
            self._python_peers.add(peer)
        self._maybe_initiate(peer)

    def _on_lock_set(self, his_locker: Any, ok: Any, _his_known: Any, my_tag: Any) -> None:
        peer = his_locker.node if type(his_locker) is Pid else None
        if peer is None or self._my_tag.get(peer) != my_tag or ok is not True:
            return  # a stale session, or the peer failed to lock and will retry
        his_tag = self._his_tag.get(peer)
        if his_tag is None:
            return
        assert self.locker is not None
        self._lock_id = self._session_lock(his_locker)
        if peer not in self._lock_sent:
            self._lock_sent.add(peer)
            self._cast(peer, (Atom("lock_set"), self.locker.pid, True, [], his_tag))
        if peer not in self._exchanged:
            self._exchanged.add(peer)
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

    def _maybe_initiate(self, peer: Atom) -> None:
        if peer in self._python_peers and self.node.name.name < peer.name:
            self.deliver((_INITIATE, peer, self._my_tag.get(peer)))

    def _schedule_initiate(self, peer: Atom) -> None:
        """Try the lock step again a little later (the lock is busy)."""
        tag = self._my_tag.get(peer)
        delay = random.uniform(RETRY_LOCK_AFTER, 2 * RETRY_LOCK_AFTER)
        asyncio.get_running_loop().call_later(delay, self.deliver, (_INITIATE, peer, tag))

    def _on_initiate(self, peer: Atom, tag: Any) -> None:
        his_locker = self._his_locker.get(peer)
        if (self._my_tag.get(peer) != tag or peer in self._lock_sent or peer in self.synced
                or his_locker is None or peer not in self._his_tag or self.locker is None):
            return
        lock_id = self._session_lock(his_locker)
        if not self.set_lock(lock_id, self.locker.pid):
            self._schedule_initiate(peer)  # another session holds the lock: later
            return
        self.node.start_task(self._take_lock(peer, tag, lock_id),
                             name=f"global-lock-{peer.name}")

    async def _take_lock(self, peer: Atom, tag: Any, lock_id: Any) -> None:
        assert self.locker is not None
        replies = await self.locker.multi_call([peer], (Atom("set_lock"), lock_id), 5.0)
        self.deliver((_LOCKED, peer, tag, lock_id, replies.get(peer) is True))

    def _on_locked(self, peer: Atom, tag: Any, lock_id: Any, ok: bool) -> None:
        assert self.locker is not None
        current = self._my_tag.get(peer) == tag and peer not in self.synced
        if not ok or not current or peer in self._lock_sent:
            self.del_lock(lock_id, self.locker.pid)
            if ok:
                self._release(peer, lock_id)
            if current and not ok:
                self._schedule_initiate(peer)
            return
        self._initiated[peer] = lock_id
        self._lock_id = lock_id
        self._lock_sent.add(peer)
        self._cast(peer, (Atom("lock_set"), self.locker.pid, True, [], self._his_tag[peer]))

    def _release(self, peer: Atom, lock_id: Any) -> None:
        assert self.locker is not None
        self.node.start_task(self.locker.multi_call([peer], (Atom("del_lock"), lock_id), 5.0),
                             name=f"global-unlock-{peer.name}")

    def _on_exchange(self, peer: Any, name_list: Any, my_tag: Any) -> None:
        if not isinstance(peer, Atom) or self._my_tag.get(peer) != my_tag:
            return
        ops, for_him = self._exchange_names(peer, name_list if isinstance(name_list, list)
                                            else [])
        self._cast(peer, (Atom("resolved"), self.node.name, for_him, self._known_list(),
                          UNUSED, [], self._his_tag.get(peer)))
        saved = self._saved.pop(peer, None)
        if saved is not None and saved[0] == "resolved":
            self._resolved(peer, ops + saved[1][0], saved[1][1])
        else:
            self._saved[peer] = ("ops", ops)

    def _on_resolved(self, peer: Any, his_ops: Any, his_known: Any, my_tag: Any) -> None:
        if not isinstance(peer, Atom) or self._my_tag.get(peer) != my_tag:
            return
        his_ops = his_ops if isinstance(his_ops, list) else []
        saved = self._saved.pop(peer, None)
        if saved is not None and saved[0] == "ops":
            self._resolved(peer, saved[1] + his_ops, his_known)
        else:
            self._saved[peer] = ("resolved", (his_ops, his_known))

    def _exchange_names(self, peer: Atom, name_list: list[Any]
                        ) -> tuple[list[Any], list[Any]]:
        ops: list[Any] = []
        for_him: list[Any] = []
        for item in name_list:
            if type(item) is not tuple or len(item) != 3 or type(item[1]) is not Pid:
                continue
            name, pid, method = item
            try:
                mine = self.table.get(name)
            except TypeError:
                continue
            if mine is None:
                ops.append((INSERT, (name, pid, method)))
            elif mine[0] == pid or not self.node.name.name < peer.name:
                continue  # same entry, or the other node resolves the clash
            else:
                winner = self._resolve(name, pid, mine[0], mine[1])
                if winner == pid:
                    ops.append((INSERT, (name, pid, method)))
                elif winner == mine[0]:
                    for_him.append((INSERT, (name, mine[0], mine[1])))
                else:
                    ops.append((DELETE, name))
                    for_him.append((DELETE, name))
        return ops, for_him

    def _resolve(self, name: Any, pid: Pid, pid2: Pid, method: Any) -> Pid | None:
        """Settle a clash as ``global``'s resolve functions do (default: the pid of the smaller
        node keeps the name, the other is killed)."""
        low, high = (pid, pid2) if pid.node.name < pid2.node.name else (pid2, pid)
        function = method.function.name if type(method) is ExportFun else "random_exit_name"
        if function == "notify_all_name":
            conflict = Atom("global_name_conflict")
            self.send(pid, (conflict, name, pid2))
            self.send(pid2, (conflict, name, pid))
            return None
        if function == "random_notify_name":
            self.send(high, (Atom("global_name_conflict"), name))
        else:
            log.info("global: name conflict, terminating %r", (name, high))
            self.node.exit(high, KILL, sender=self.pid)
        return low

    def _resolved(self, peer: Atom, ops: list[Any], his_known: Any) -> None:
        self._do_ops(ops)
        lock_id = self._initiated.pop(peer, None)
        if lock_id is not None and self.locker is not None:
            self.del_lock(lock_id, self.locker.pid)
            self._release(peer, lock_id)
        previously_known = [n for n in self.known if n is not peer]
        new_nodes = [peer, *_node_list(his_known)]
        self.known.add(peer)
        self.synced.add(peer)
        self._sync_others(_node_list(his_known))
        if previously_known:
            assert self.locker is not None
            lock_id = getattr(self, "_lock_id", (GLOBAL, [self.locker.pid]))
            message: Any = (Atom("new_nodes"), self.node.name, ops, [],
                       [(n, VSN) for n in new_nodes if n is not self.node.name],
                       [(Atom("vsn"), VSN), (Atom("lock"), lock_id)])
            for other in previously_known:
                self._cast(other, message)
        log.info("global: in sync with %s", peer.name)
        self._wake_syncers()

    def _sync_others(self, nodes: list[Atom]) -> None:
        for peer in nodes:
            if peer is self.node.name or peer in self.known:
                continue
            self.known.add(peer)
            self.node.start_task(self._sync_other(peer), name=f"global-sync-{peer.name}")

    async def _sync_other(self, peer: Atom) -> None:
        if await self.node.connect(peer):
            self._cast(peer, (Atom("in_sync"), self.node.name, True))
        else:
            log.warning("global at %s failed to connect to %s", self.node.name.name, peer.name)
            self.known.discard(peer)

    def _mark_synced(self, peer: Atom) -> None:
        self.known.add(peer)
        self.synced.add(peer)
        self._saved.pop(peer, None)
        self._wake_syncers()

    # -- plain messages ----------------------------------------------------------------------

    def handle_info(self, message: Any) -> None:
        try:
            self._info(message)
        except Exception:
            log.exception("global: message %r failed, ignored", message)

    def _info(self, message: Any) -> None:
        if type(message) is not tuple or not message:
            log.warning("global: unknown message %r ignored", message)
            return
        kind = message[0]
        if kind is _NODE_EVENT:
            self._on_node(message[1], message[2])
        elif kind is _INITIATE:
            self._on_initiate(message[1], message[2])
        elif kind is _LOCKED:
            self._on_locked(*message[1:])
        elif kind is DOWN and len(message) == 5:
            ref = message[1]
            name = self._name_refs.pop(ref, None)
            if name is not None and name in self.table and self.table[name][2] == ref:
                del self.table[name]
            pid = self._lock_refs.pop(ref, None)
            if pid is not None:
                self._lock_holder_down(pid)
        elif _is(message, Atom("init_connect_ack"), 4):
            peer = message[1]
            if self._my_tag.get(peer) != message[2]:
                log.info("global: stale init_connect_ack from %r ignored", peer)
        elif _is(message, Atom("cancel_connect"), 3):
            peer = message[1]
            if isinstance(peer, Atom) and self._my_tag.get(peer) == message[2] \
                    and peer in self.visible_nodes() and peer not in self.synced:
                self._start_connect(peer)
        elif _is(message, Atom("remove_connection"), 2) and isinstance(message[1], Atom):
            peer = message[1]
            log.warning("global at %s: %s asked us to disconnect from it (overlapping "
                        "partitions)", self.node.name.name, peer.name)
            self._forget(peer)
            self.node.disconnect(peer)
        elif _is(message, Atom("lost_connection"), 5):
            log.info("global: %r lost its connection to %r", message[1], message[4])
        else:
            log.warning("global: unknown message %r ignored", message)

    def _on_node(self, peer: Atom, up: bool) -> None:
        if up:
            if peer not in self.known and peer not in self._my_tag:
                self._start_connect(peer)
        else:
            self._forget(peer)
        self._wake_syncers()

    def _forget(self, peer: Atom) -> None:
        self.known.discard(peer)
        self.synced.discard(peer)
        for table in (self._my_tag, self._his_tag, self._his_locker, self._saved,
                      self._initiated):
            table.pop(peer, None)
        self._lock_sent.discard(peer)
        self._exchanged.discard(peer)
        self._python_peers.discard(peer)
        for name, (pid, _method, _ref) in list(self.table.items()):
            if pid.node is peer:
                self.delete_name(name)
        for resource, entry in list(self.locks.items()):
            for pid in [p for p in entry[1] if p.node is peer]:
                ref = entry[1].pop(pid)
                self._lock_refs.pop(ref, None)
            if not entry[1]:
                del self.locks[resource]


# -- the API -------------------------------------------------------------------------------


def server(node: Node) -> GlobalNameServer:
    """The node's ``global_name_server`` (raises RuntimeError if it is not running)."""
    pid = node.whereis(GNS)
    process = node.process(pid) if pid is not None else None
    if not isinstance(process, GlobalNameServer):
        raise RuntimeError(f"{node} runs no global_name_server (is it started?)")
    return process


def whereis_name(node: Node, name: Any) -> Pid | None:
    """The pid registered globally as ``name`` (a ``str`` is taken as an atom), or None."""
    entry = server(node).table.get(_atom(name))
    return entry[0] if entry is not None else None


def registered_names(node: Node) -> list[Any]:
    """Every global name this node knows."""
    return list(server(node).table)


def send(node: Node, name: Any, message: Any) -> Pid:
    """Send ``message`` to the process registered as ``{:global, name}``; return its pid.

    Raises LookupError when no process has that name (``:global.send/2`` exits there).
    """
    pid = whereis_name(node, name)
    if pid is None:
        raise LookupError(f"no process is registered globally as {name!r}")
    node.send(pid, message)
    return pid


async def sync(node: Node, timeout: float = 10.0) -> None:
    """Wait until the connect protocol has completed with every visible connected node."""
    await server(node).wait_synced(timeout)


async def register_name(node: Node, name: Any, pid: Pid, *, method: Any = RANDOM_EXIT_NAME,
                        timeout: float = 30.0) -> bool:
    """Register ``pid`` as the global ``name`` on every node of the cluster.

    Runs ``global``'s transaction — lock ``{global, Registrar}`` on every known node (retrying
    with backoff while another requester holds it), ``{register, …}``, unlock — and returns
    False when the name is taken. ``method`` is the clash resolver (default
    ``global:random_exit_name/3``).
    """
    name = _atom(name)
    gns = server(node)

    def body(nodes: list[Atom]) -> tuple[Any, bool]:
        if name in gns.table:
            return None, False
        assert gns.registrar is not None
        if gns.lock_still_set(gns.registrar.pid):
            gns.insert_name(name, pid, method)
        return (Atom("register"), name, pid, method), True

    return await _transaction(gns, body, timeout)


async def unregister_name(node: Node, name: Any, *, timeout: float = 30.0) -> None:
    """Remove the global ``name`` on every node of the cluster."""
    name = _atom(name)
    gns = server(node)

    def body(nodes: list[Atom]) -> tuple[Any, bool]:
        gns.delete_name(name)
        return (Atom("unregister"), name), True

    await _transaction(gns, body, timeout)


async def _transaction(gns: GlobalNameServer, body: Any, timeout: float) -> bool:
    registrar = gns.registrar
    assert registrar is not None
    lock_id = (GLOBAL, registrar.pid)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with gns.transaction:
        attempt = 0
        while True:
            nodes = sorted(gns.known & set(gns.visible_nodes()), key=lambda a: a.name)
            locked = await _lock_all(gns, registrar, lock_id, nodes, deadline - loop.time())
            if locked:
                break
            attempt += 1
            delay = min(0.05 * 2 ** attempt, 1.0) * random.uniform(0.5, 1.5)
            if loop.time() + delay > deadline:
                raise TimeoutError("the global lock stayed busy")
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


async def _lock_all(gns: GlobalNameServer, registrar: _Requester, lock_id: Any,
                    nodes: list[Atom], timeout: float) -> bool:
    """Set the lock on the boss (the greatest node), then on everyone; undo it all if any
    node refuses."""
    everyone = sorted([*nodes, gns.node.name], key=lambda a: a.name)
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
                if replies.get(peer) is True:
                    done.append(peer)
                elif peer in replies:
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
