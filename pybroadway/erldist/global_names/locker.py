"""What ``global``'s locker process does for a connect session: it sets the session lock
``{global, sorted([MyLocker, HisLocker])}`` on every node of this node's partition, the boss
(the greatest node) first, and deletes it again with the boss last (global.erl's
``lock_nodes_safely``, ``set_lock_on_nodes``, ``check_replies`` and ``delete_global_lock``).

Both sides of a session lock their own partition with the same id, so that the two
partitions being merged are locked as one, and no other merge can touch any of their nodes
until the names are exchanged and ``new_nodes`` has gone out: a node that holds another
merge's lock drops the names a ``new_nodes`` brings (global.erl's ``lock_still_set``)."""

from __future__ import annotations

import asyncio
from typing import Any

from pybroadway.erldist.global_names.protocol import GLOBAL, by_name
from pybroadway.erldist.global_names.requester import NO_ANSWER, Requester
from pybroadway.erldist.global_names.tables import GlobalTables
from pybroadway.term import Atom

LOCK_CALL_TIMEOUT = 5.0
"""Seconds a node has to answer a set_lock or del_lock. global.erl waits until it answers or
goes down, which lets one silent peer stop a node's global from ever merging again; here a
set_lock not answered in time fails the attempt (it is retried, as a refused one is) and is
deleted again on that node, in case it grants it late: the lock is never taken as held where
it was not granted."""


def the_boss(nodes: list[Atom]) -> Atom:
    """The greatest node, locked first and unlocked last (global.erl's ``the_boss``)."""
    return max(nodes, key=by_name)


class PartitionLocker(GlobalTables):
    """The locker's part of the server: one lock attempt at a time, as global's single locker
    process makes them (its other messages wait meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.locker: Requester | None = None
        self._locker_turn = asyncio.Lock()

    def known_nodes(self) -> list[Atom]:
        """This node's partition but itself (the connect protocol keeps it)."""
        raise NotImplementedError

    def session_lock(self, his_locker: Any) -> Any:
        """The lock of a connect session: ``{global, lists:sort([MyLocker, HisLocker])}``,
        the same id on both sides (global.erl's ``locker_lock_id``). Erlang orders pids by
        serial, then number, then node (OTP 25 and 28 alike)."""
        assert self.locker is not None
        ids = sorted([self.locker.pid, his_locker], key=lambda p: (p.serial, p.id,
                                                                  p.node.name))
        return (GLOBAL, ids)

    def global_lock_set(self) -> bool:
        """Whether any ``global`` lock is held here: the locker starts no session then."""
        return GLOBAL in self.locks

    async def lock_partition(self, lock_id: Any, extra: list[Atom]) -> list[Atom] | None:
        """Set ``lock_id`` on the boss, then on this node and ``extra``, then on every known
        node; the known nodes then, or None (and nothing left locked) when a node refused."""
        async with self._locker_turn:
            return await self._lock_nodes_safely(lock_id, extra)

    async def _lock_nodes_safely(self, lock_id: Any, extra: list[Atom]) -> list[Atom] | None:
        me = self.node.name
        first = the_boss([me, *self.known_nodes()])
        # Locking this node could stop another that has already locked the boss: only check
        # that it could be locked.
        if first is not me and not self.can_set_lock(lock_id):
            return None
        if not await self._set_lock_on(lock_id, [first]):
            return None
        known = self.known_nodes()  # it may have changed meanwhile (the boss is kept)
        second = [n for n in dict.fromkeys([me, *extra]) if n is not first]
        if not await self._set_lock_on(lock_id, second):
            await self._del_lock_on(lock_id, [first])
            return None
        if not await self._set_lock_on(lock_id, [n for n in known if n is not first]):
            await self._del_lock_on(lock_id, [first, *second])
            return None
        return known

    async def _set_lock_on(self, lock_id: Any, nodes: list[Atom]) -> bool:
        """Set ``lock_id`` on every node of ``nodes``: on a refusal or a missing answer,
        delete it from the nodes that granted it and from those that did not answer."""
        if not nodes:
            return True
        assert self.locker is not None
        me = self.node.name
        if len(nodes) > 1 and me in nodes and not self.can_set_lock(lock_id):
            return False  # probe this node before calling the others
        replies: dict[Atom, Any] = {}
        if me in nodes:
            replies[me] = self.set_lock(lock_id, self.locker.pid)
        others = [n for n in nodes if n is not me]
        if others:
            replies.update(await self.locker.multi_call(
                others, (Atom("set_lock"), lock_id), LOCK_CALL_TIMEOUT))
        if all(reply is True for reply in replies.values()):
            return True
        undo = [n for n, reply in replies.items() if reply is True or reply is NO_ANSWER]
        if undo:
            await self._del_lock_on(lock_id, undo)
        return False

    async def _del_lock_on(self, lock_id: Any, nodes: list[Atom]) -> None:
        assert self.locker is not None
        if self.node.name in nodes:
            self.del_lock(lock_id, self.locker.pid)
        others = [n for n in nodes if n is not self.node.name]
        if others:
            await self.locker.multi_call(others, (Atom("del_lock"), lock_id),
                                         LOCK_CALL_TIMEOUT)

    async def delete_global_lock(self, lock_id: Any, nodes: list[Atom]) -> None:
        """Delete ``lock_id`` from ``nodes``, the boss last, so that a locker that has the
        boss does not then fail on the others."""
        if not nodes:
            return
        boss = the_boss(nodes)
        await self._del_lock_on(lock_id, [n for n in nodes if n is not boss])
        await self._del_lock_on(lock_id, [boss])

    def release(self, lock_id: Any, nodes: list[Atom]) -> None:
        """Start deleting a session lock; what is sent to the nodes before this goes before
        the del_lock calls (one connection per node keeps the order)."""
        self.node.start_task(self.delete_global_lock(lock_id, nodes),
                             name="global-unlock")
