"""The membership table of one ``pg`` scope: which pids are in which group, which of them are
this node's, and who is told when that changes.

A group is any term. Two groups are the same when they encode to the same external term
format, so ``"workers"`` and ``b"workers"`` (both binaries on the BEAM) are one group, while
``1`` and ``True`` (an integer and the atom ``true``) are two, as on the BEAM.

The table outlives one incarnation of the scope's server: the memberships of this node's
processes and the subscriptions are kept when the server is restarted, the members peers
announced are not (the new server learns them again).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from pybroadway.term import Pid, encode

__all__ = ["Callback", "PgEvent", "ScopeTable", "Subscription", "group_key", "take"]

log = logging.getLogger("pybroadway.erldist.pg")


def group_key(group: Any) -> bytes:
    """What identifies ``group`` in a table: its external term format."""
    return encode(group)


def take(items: list[Pid], pids: list[Pid]) -> list[Pid]:
    """Remove one occurrence of each of ``pids`` from ``items`` (in place); return those that
    were there. One pass over ``items`` however many ``pids`` there are."""
    if len(pids) <= 4:
        taken = []
        for pid in pids:
            try:
                items.remove(pid)
            except ValueError:
                continue
            taken.append(pid)
        return taken
    wanted = Counter(pids)
    kept: list[Pid] = []
    taken = []
    for pid in items:
        if wanted[pid] > 0:
            wanted[pid] -= 1
            taken.append(pid)
        else:
            kept.append(pid)
    items[:] = kept
    return taken


class PgEvent(NamedTuple):
    """A change of membership: ``pids`` joined or left ``group``."""

    kind: Literal["join", "leave"]
    group: Any
    pids: list[Pid]


Callback = Callable[[PgEvent], None]
"""Called with each :class:`PgEvent`, in the scope's order; must not block (it runs in the
scope's server; an exception is logged and ignored)."""


class _Group:
    __slots__ = ("local", "members", "term")

    def __init__(self, term: Any) -> None:
        self.term = term
        self.members: list[Pid] = []  # all members, in the order they joined
        self.local: list[Pid] = []    # the members that are this node's processes


class Subscription:
    """A watch on a scope (every group) or on one group: ``members`` is what it held when the
    watch began (a dict group → pids for a scope, a list for a group); :meth:`cancel` ends it.
    Usable as a context manager."""

    def __init__(self, table: ScopeTable, key: bytes | None, callback: Callback,
                 members: Any) -> None:
        self._table = table
        self._key = key
        self.callback = callback
        self.members = members

    def cancel(self) -> None:
        self._table.unsubscribe(self._key, self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class ScopeTable:
    """Groups and their members. Every change goes through :meth:`add` and :meth:`remove`,
    which tell the subscribers."""

    def __init__(self) -> None:
        self._groups: dict[bytes, _Group] = {}
        self.local: dict[Pid, list[bytes]] = {}
        """This node's members: pid → the groups it joined (once per join)."""
        self._scope_watchers: list[Subscription] = []
        self._group_watchers: dict[bytes, list[Subscription]] = {}

    # -- reading -----------------------------------------------------------------------------

    def members(self, group: Any) -> list[Pid]:
        entry = self._groups.get(group_key(group))
        return list(entry.members) if entry is not None else []

    def local_members(self, group: Any) -> list[Pid]:
        entry = self._groups.get(group_key(group))
        return list(entry.local) if entry is not None else []

    def which_groups(self) -> list[Any]:
        return [entry.term for entry in self._groups.values()]

    def which_local_groups(self) -> list[Any]:
        return [entry.term for entry in self._groups.values() if entry.local]

    def term(self, key: bytes) -> Any:
        return self._groups[key].term

    def local_groups(self) -> list[tuple[Any, list[Pid]]]:
        """``[{Group, LocalPids}]``, what a sync announces to a peer."""
        return [(entry.term, list(entry.local)) for entry in self._groups.values()
                if entry.local]

    # -- changing ----------------------------------------------------------------------------

    def add(self, key: bytes, group: Any, pids: list[Pid], *, local: bool) -> None:
        """``pids`` join the group ``key`` (whose term is ``group``)."""
        if not pids:
            return
        entry = self._groups.get(key)
        if entry is None:
            entry = self._groups[key] = _Group(group)
        entry.members.extend(pids)
        if local:
            entry.local.extend(pids)
        self._notify(key, PgEvent("join", entry.term, list(pids)))

    def remove(self, key: bytes, pids: list[Pid], *, local: bool) -> list[Pid]:
        """One membership of each of ``pids`` leaves the group ``key``; returns those that
        were members (the others are ignored)."""
        entry = self._groups.get(key)
        if entry is None:
            return []
        left = take(entry.members, pids)
        if local:
            take(entry.local, left)
        if not entry.members:
            del self._groups[key]
        if left:
            self._notify(key, PgEvent("leave", entry.term, left))
        return left

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, group: Any, callback: Callback, *, scope: bool) -> Subscription:
        if scope:
            snapshot: Any = {entry.term: list(entry.members) for entry in self._groups.values()}
            subscription = Subscription(self, None, callback, snapshot)
            self._scope_watchers.append(subscription)
            return subscription
        key = group_key(group)
        subscription = Subscription(self, key, callback, self.members(group))
        self._group_watchers.setdefault(key, []).append(subscription)
        return subscription

    def unsubscribe(self, key: bytes | None, subscription: Subscription) -> None:
        watchers = self._scope_watchers if key is None else self._group_watchers.get(key, [])
        if subscription in watchers:
            watchers.remove(subscription)
        if key is not None and not watchers:
            self._group_watchers.pop(key, None)

    def _notify(self, key: bytes, event: PgEvent) -> None:
        for subscription in [*self._scope_watchers, *self._group_watchers.get(key, ())]:
            try:
                subscription.callback(event)
            except Exception:
                log.exception("pg: a membership callback %r failed", subscription.callback)
