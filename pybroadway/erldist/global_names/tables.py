"""The name table and the lock table of ``global_name_server``, and how a peer's names are
merged into them (name clashes settled as ``global``'s resolve functions do)."""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from pybroadway._throttle import Throttle
from pybroadway.erldist.genserver import GenServer
from pybroadway.erldist.global_names.protocol import DELETE, GLOBAL, INSERT, is_tagged
from pybroadway.term import Atom, ExportFun, Pid, Reference, loggable
from pybroadway.term.atoms import KILL

if TYPE_CHECKING:
    from pybroadway.erldist.process import ProcessHost

log = logging.getLogger("pybroadway.erldist.global")


class LocalNames:
    """What outlives one ``global_name_server`` of a node: the global names its own processes
    hold (so that a restarted server registers them again) and how many servers it has had."""

    def __init__(self) -> None:
        self.names: dict[Any, tuple[Pid, Any]] = {}
        self.servers = 0


_local_names: weakref.WeakKeyDictionary[ProcessHost, LocalNames] = weakref.WeakKeyDictionary()


def local_names(node: ProcessHost) -> LocalNames:
    """The :class:`LocalNames` of ``node``, made on first use."""
    names = _local_names.get(node)
    if names is None:
        names = _local_names[node] = LocalNames()
    return names


class GlobalTables(GenServer):
    """Names and locks, each entry monitoring the pid it belongs to."""

    def __init__(self) -> None:
        super().__init__()
        # What peers send that is ignored: they can send any number of them.
        self._unexpected = Throttle(log, logging.WARNING, "unexpected global messages")
        # name -> (pid, method, monitor ref)
        self.table: dict[Any, tuple[Pid, Any, Reference]] = {}
        self._name_refs: dict[Reference, Any] = {}
        # resource id -> [requester id, {pid: monitor ref}]
        self.locks: dict[Any, list[Any]] = {}
        self._lock_refs: dict[Reference, Pid] = {}

    # -- names -------------------------------------------------------------------------------

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
        if pid.node is self.node.name:
            local_names(self.node).names[name] = (pid, method)

    def delete_name(self, name: Any) -> None:
        """Forget ``name`` and stop monitoring its pid."""
        entry = self.table.pop(name, None)
        if entry is not None:
            self._name_refs.pop(entry[2], None)
            self.demonitor(entry[2])
            if entry[0].node is self.node.name:
                local_names(self.node).names.pop(name, None)

    def do_ops(self, ops: Any) -> None:
        """Apply a peer's ``{insert, {Name, Pid, Method}}`` / ``{delete, Name}`` list."""
        for op in ops if isinstance(ops, list) else []:
            try:
                if is_tagged(op, INSERT, 2) and type(op[1]) is tuple and len(op[1]) == 3 \
                        and type(op[1][1]) is Pid:
                    self.insert_name(*op[1])
                elif is_tagged(op, DELETE, 2):
                    self.delete_name(op[1])
                else:
                    self._unexpected.log("global: unknown name operation %s ignored",
                                         loggable(op))
            except TypeError:
                self._unexpected.log("global: name %s cannot be stored here, ignored",
                                     loggable(op))

    def exchange_names(self, peer: Atom, name_list: list[Any]
                       ) -> tuple[list[Any], list[Any]]:
        """Merge ``peer``'s names: the operations for this node, and those for the peer."""
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
            log.info("global: name conflict, terminating %s", loggable((name, high)))
            self.node.exit(high, KILL, sender=self.pid)
        return low

    # -- locks -------------------------------------------------------------------------------

    def set_lock(self, lock_id: Any, pid: Pid) -> bool:
        """``{ResourceId, RequesterId}`` for ``pid``: False when another requester holds it."""
        if not self.can_set_lock(lock_id):
            return False
        resource, requester = lock_id
        entry = self.locks.get(resource)
        if entry is None:
            entry = self.locks[resource] = [requester, {}]
        if pid not in entry[1]:
            ref = self.monitor(pid)
            entry[1][pid] = ref
            self._lock_refs[ref] = pid
        return True

    def can_set_lock(self, lock_id: Any) -> bool:
        """Whether ``{ResourceId, RequesterId}`` is free here or held by that requester."""
        entry = self.locks.get(lock_id[0])
        return entry is None or entry[0] == lock_id[1]

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

    def lock_still_set(self, pid: Pid) -> bool:
        """A registration is accepted while its caller holds the global lock (or none is)."""
        entry = self.locks.get(GLOBAL)
        return entry is None or pid in entry[1]

    def _lock_holder_down(self, pid: Pid) -> None:
        for resource, entry in list(self.locks.items()):
            entry[1].pop(pid, None)
            if not entry[1]:
                del self.locks[resource]

    # -- the pids behind the entries ---------------------------------------------------------

    def monitored_down(self, ref: Reference) -> None:
        """The pid that ``ref`` monitors is gone: drop its name and its locks."""
        name = self._name_refs.pop(ref, None)
        if name is not None and name in self.table and self.table[name][2] == ref:
            del self.table[name]
        pid = self._lock_refs.pop(ref, None)
        if pid is not None:
            self._lock_holder_down(pid)

    def drop_node(self, peer: Atom) -> None:
        """Drop the names and the locks of every pid on ``peer`` (it went down)."""
        for name, (pid, _method, _ref) in list(self.table.items()):
            if pid.node is peer:
                self.delete_name(name)
        for resource, entry in list(self.locks.items()):
            for pid in [p for p in entry[1] if p.node is peer]:
                ref = entry[1].pop(pid)
                self._lock_refs.pop(ref, None)
            if not entry[1]:
                del self.locks[resource]
