"""Starting a ``pg`` scope on a node and using it: :func:`start` and the :class:`Scope`
handle."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from pybroadway.erldist.pg.groups import Callback, ScopeTable, Subscription
from pybroadway.erldist.pg.scope import DEFAULT_MAX_REMOTE_MEMBERS, ScopeServer
from pybroadway.erldist.process import Process
from pybroadway.erldist.supervisor import ChildSpec
from pybroadway.errors import ArgumentError, StateError
from pybroadway.term import Atom, Pid

if TYPE_CHECKING:
    from pybroadway.erldist.node import Node

__all__ = ["DEFAULT_SCOPE", "Scope", "ScopeNotRunning", "scope", "start"]

DEFAULT_SCOPE = "pg"
"""The scope ``pg:start_link()`` starts on the BEAM, and ``pg:join/2`` & co. use."""

_tables: weakref.WeakKeyDictionary[Node, dict[Atom, ScopeTable]] = \
    weakref.WeakKeyDictionary()


class ScopeNotRunning(StateError):
    """The scope's server is not running (never started, stopped, or between a crash and its
    restart)."""


def _child_id(name: Atom) -> str:
    return f"pg:{name.name}"


async def start(node: Node, name: str = DEFAULT_SCOPE, *,
                max_remote_members: int = DEFAULT_MAX_REMOTE_MEMBERS,
                discover_hidden: bool | None = None) -> Scope:
    """Start the scope ``name`` (registered under that name, like ``pg:start_link(Name)``) as
    a child of the node's ``kernel_sup``, which restarts it, with its name, if it crashes.

    It finds the scopes of the same name on the connected nodes, now and at each nodeup, and
    they find it. Connections to hidden nodes are used when ``discover_hidden`` is true; by
    default they are when this node is hidden itself (a visible BEAM node never announces its
    scope over a hidden connection, so the hidden side must). The scopes of one peer node may
    make this node hold at most ``max_remote_members`` members; more are ignored, with an
    error logged. Raises ValueError if the scope runs already.
    """
    supervisor = node.supervisor
    if supervisor is None:
        raise StateError(f"start {node} before starting a pg scope")
    atom = Atom(name)
    tables = _tables.setdefault(node, {})
    table = tables[atom] = tables.get(atom) or ScopeTable()

    def server() -> Process:
        return ScopeServer(atom, table, max_remote_members=max_remote_members,
                           discover_hidden=discover_hidden)

    await supervisor.start_child(ChildSpec(id=_child_id(atom), start=server, name=atom))
    return Scope(node, atom)


def scope(node: Node, name: str = DEFAULT_SCOPE) -> Scope:
    """The handle of a scope started on ``node`` with :func:`start`."""
    return Scope(node, Atom(name))


def _pids(pid_or_pids: Any, node: Node) -> list[Pid]:
    pids = [pid_or_pids] if isinstance(pid_or_pids, Pid | Process) else list(pid_or_pids)
    result = [p.pid if isinstance(p, Process) else p for p in pids]
    for pid in result:
        if type(pid) is not Pid or pid.node is not node.name:
            raise ArgumentError(f"pg: only this node's processes can join or leave, not {pid!r}")
    return result


class Scope:
    """A ``pg`` scope of a node, as pg's API sees it: every call reaches the scope's current
    server, so a handle stays good across restarts.

    Groups are any terms (see :mod:`~pybroadway.erldist.pg.groups`). Members are pids; a
    process may join a group several times, and must then leave as many times. Joining and
    leaving take effect at once here and reach the peers in order; a member that exits leaves
    all its groups.
    """

    def __init__(self, node: Node, name: Atom) -> None:
        self.node = node
        self.name = name

    def __repr__(self) -> str:
        return f"<pg scope {self.name.name} on {self.node.name.name}>"

    @property
    def server(self) -> ScopeServer | None:
        """The scope's running server, if any."""
        pid = self.node.whereis(self.name)
        process = self.node.process(pid) if pid is not None else None
        return process if isinstance(process, ScopeServer) else None

    def _running(self) -> ScopeServer:
        server = self.server
        if server is None:
            raise ScopeNotRunning(f"the pg scope {self.name.name} is not running on "
                                  f"{self.node.name.name}")
        return server

    def _table(self) -> ScopeTable | None:
        return _tables.get(self.node, {}).get(self.name)

    def join(self, group: Any, pid_or_pids: Pid | Process | list[Pid | Process]) -> None:
        """Make this node's process(es) members of ``group`` (``pg:join/3``)."""
        self._running().join(group, _pids(pid_or_pids, self.node))

    def leave(self, group: Any, pid_or_pids: Pid | Process | list[Pid | Process]) -> bool:
        """End one membership of each in ``group``; False if none was a member
        (``pg:leave/3``'s ``not_joined``)."""
        return self._running().leave(group, _pids(pid_or_pids, self.node))

    def get_members(self, group: Any) -> list[Pid]:
        """All members of ``group`` known here, on every node, in the order they joined."""
        table = self._table()
        return table.members(group) if table is not None else []

    def get_local_members(self, group: Any) -> list[Pid]:
        """The members of ``group`` that are this node's processes."""
        table = self._table()
        return table.local_members(group) if table is not None else []

    def which_groups(self) -> list[Any]:
        """Every group with at least one member."""
        table = self._table()
        return table.which_groups() if table is not None else []

    def which_local_groups(self) -> list[Any]:
        """Every group with at least one member on this node."""
        table = self._table()
        return table.which_local_groups() if table is not None else []

    def monitor_scope(self, callback: Callback) -> Subscription:
        """Call ``callback(PgEvent)`` on every join and leave in the scope, from now on
        (``pg:monitor_scope/1``); the subscription's ``members`` holds every group's members
        at this moment. Subscriptions survive restarts of the server; a restarted server
        reports the members of peers as leaving, then joining again once rediscovered."""
        return self._running().table.subscribe(None, callback, scope=True)

    def monitor(self, group: Any, callback: Callback) -> Subscription:
        """Like :meth:`monitor_scope` for one group (``pg:monitor/2``); ``members`` is the
        group's members at this moment."""
        return self._running().table.subscribe(group, callback, scope=False)

    async def stop(self) -> None:
        """Stop the scope's server; this node's memberships go with it."""
        supervisor = self.node.supervisor
        if supervisor is not None:
            await supervisor.terminate_child(_child_id(self.name))
        table = _tables.get(self.node, {}).pop(self.name, None)
        if table is not None:
            table.local.clear()
