"""Links, monitors and exit signals between processes, on this node and across nodes, with
the BEAM's rules.

The remote half of every link and monitor is also kept per peer node, so that losing the
connection to a peer ends all of them at once (``noconnection``), as the BEAM does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pybroadway.erldist import control as op
from pybroadway.erldist import flags as dflags
from pybroadway.erldist.connection import ProtocolError
from pybroadway.erldist.targets import node_of, target_name
from pybroadway.term import Atom, Pid, Reference, loggable
from pybroadway.term.atoms import DOWN, EXIT, KILL, KILLED, NOCONNECTION, NOPROC, NORMAL, PROCESS

if TYPE_CHECKING:
    from pybroadway.erldist.calls import PendingCall
    from pybroadway.erldist.connection import Connection
    from pybroadway.erldist.connections import Connections
    from pybroadway.erldist.process import Process


class Signals:
    """Links, monitors and exit signals of the processes of the node ``here``, whose
    references ``make_ref`` makes. A process signals through its node's (``node.signals``):
    :meth:`link`, :meth:`unlink`, :meth:`monitor`, :meth:`demonitor`, and
    :meth:`process_exited` when it ends.

    ``processes``, ``names`` and ``calls`` are the node's tables, shared, not copied; frames
    go out through ``net``.
    """

    def __init__(self, here: Atom, make_ref: Callable[[], Reference], net: Connections,
                 processes: dict[Pid, Process], names: dict[Atom, Process],
                 calls: dict[Reference, PendingCall]) -> None:
        self._here = here
        self._make_ref = make_ref
        self._route = net.route
        self._connections = net.live
        self._processes = processes
        self._names = names
        self._calls = calls
        self._unlink_ids = itertools.count(1)
        # peer -> (local pid, remote pid) of each link across that connection
        self._remote_links: dict[Atom, set[tuple[Pid, Pid]]] = {}
        # peer -> monitors our processes hold on its processes, by reference
        self._remote_monitors: dict[Atom, dict[Reference, Process]] = {}
        # peer -> our processes its processes monitor, by reference
        self._remote_watchers: dict[Atom, dict[Reference, Process]] = {}

    def local(self, target: Any) -> Process | None:
        """The process of this node a pid, a name or ``(name, this node)`` stands for."""
        name = target_name(target)
        if type(name) is Pid:
            return self._processes.get(name)
        return self._names.get(name if isinstance(name, Atom) else Atom(name))

    # -- what local processes do -------------------------------------------------------------

    def link(self, process: Process, pid: Pid) -> None:
        """Link ``process`` to ``pid`` (``link/1``); a local ``pid`` that is gone sends
        ``noproc`` back at once."""
        if pid in process.links:
            return
        if pid.node is self._here:
            other = self._processes.get(pid)
            if other is None:
                self.exit_signal(process, pid, NOPROC, link=True)
                return
            process.links.add(pid)
            other.links.add(process.pid)
            return
        process.links.add(pid)
        self._remote_links.setdefault(pid.node, set()).add((process.pid, pid))
        self._route(pid.node, (op.LINK, process.pid, pid))

    def unlink(self, process: Process, pid: Pid) -> None:
        """Remove the link between ``process`` and ``pid`` (``unlink/1``), on both sides."""
        if pid not in process.links:
            return
        process.links.discard(pid)
        if pid.node is self._here:
            other = self._processes.get(pid)
            if other is not None:
                other.links.discard(process.pid)
            return
        self._remote_links.get(pid.node, set()).discard((process.pid, pid))
        connection = self._connections.get(pid.node)
        if connection is not None:
            if connection.flags & dflags.UNLINK_ID:
                connection.send((op.UNLINK_ID, next(self._unlink_ids), process.pid, pid))
            else:
                connection.send((op.UNLINK, process.pid, pid))

    def monitor(self, process: Process, target: Any) -> Reference:
        """``process`` monitors ``target`` (a pid, a name or ``(name, node)``); returns the
        monitor's reference, which its ``DOWN`` message carries."""
        ref = self._make_ref()
        node = node_of(target, self._here)
        if node is self._here:
            watched = self.local(target)
            if watched is None:
                process.deliver((DOWN, ref, PROCESS, target, NOPROC))
            else:
                process.monitors[ref] = target
                watched.watchers[ref] = (process.pid, target)
            return ref
        process.monitors[ref] = target
        self._remote_monitors.setdefault(node, {})[ref] = process
        self._route(node, (op.MONITOR_P, process.pid, target_name(target), ref))
        return ref

    def demonitor(self, process: Process, ref: Reference) -> None:
        """``process`` drops its monitor ``ref``; an unknown one is ignored."""
        target = process.monitors.pop(ref, None)
        if target is None:
            return
        node = node_of(target, self._here)
        if node is self._here:
            watched = self.local(target)
            if watched is not None:
                watched.watchers.pop(ref, None)
            return
        self._remote_monitors.get(node, {}).pop(ref, None)
        self._route(node, (op.DEMONITOR_P, process.pid, target_name(target), ref))

    def process_exited(self, process: Process, reason: Any) -> None:
        """``process`` has ended with ``reason``: it leaves the node's tables, its links get
        exit signals, its watchers ``DOWN`` messages, and its own monitors end."""
        me = process.pid
        self._processes.pop(me, None)
        for name in list(process.names):
            if self._names.get(name) is process:
                del self._names[name]
        for pid in process.links:
            self.send_exit(me, pid, reason, link=True)
        process.links.clear()
        for ref, (watcher, target) in process.watchers.items():
            self.send_down(watcher, ref, target, me, reason)
        process.watchers.clear()
        for ref, target in process.monitors.items():
            node = node_of(target, self._here)
            if node is not self._here:
                self._remote_monitors.get(node, {}).pop(ref, None)
                self._route(node, (op.DEMONITOR_P, me, target_name(target), ref))
        process.monitors.clear()

    # -- signals out -------------------------------------------------------------------------

    def send_exit(self, sender: Pid, to: Pid, reason: Any, *, link: bool) -> None:
        """An exit signal from ``sender``: a link's (``link``) or ``exit/2``'s."""
        if to.node is self._here:
            process = self._processes.get(to)
            if process is not None:
                if link:
                    process.links.discard(sender)
                self.exit_signal(process, sender, reason, link=link)
            return
        connection = self._connections.get(to.node)
        if link:
            self._remote_links.get(to.node, set()).discard((sender, to))
        if connection is None:
            if not link:
                # exit/2 connects on demand, as a send does (a link signal never needs to:
                # without a connection the link is already gone).
                self._route(to.node, (op.EXIT2, sender, to, reason))
            return
        if connection.flags & dflags.EXIT_PAYLOAD:
            connection.send((op.PAYLOAD_EXIT if link else op.PAYLOAD_EXIT2, sender, to), reason)
        else:
            connection.send((op.EXIT if link else op.EXIT2, sender, to, reason))

    def send_down(self, watcher: Pid, ref: Reference, target: Any, pid: Pid,
                  reason: Any) -> None:
        """The monitor ``ref`` that ``watcher`` holds on ``target`` (``pid``) fires."""
        if watcher.node is self._here:
            call = self._calls.pop(ref, None)
            if call is not None:  # a Node.call to a local process
                call.fail(reason, target)
                return
            process = self._processes.get(watcher)
            if process is not None and process.monitors.pop(ref, None) is not None:
                process.deliver((DOWN, ref, PROCESS, target, reason))
            return
        self._remote_watchers.get(watcher.node, {}).pop(ref, None)
        connection = self._connections.get(watcher.node)
        if connection is None:
            return
        source = target if isinstance(target, Atom) else pid
        if connection.flags & dflags.EXIT_PAYLOAD:
            connection.send((op.PAYLOAD_MONITOR_P_EXIT, source, watcher, ref), reason)
        else:
            connection.send((op.MONITOR_P_EXIT, source, watcher, ref, reason))

    def exit_signal(self, process: Process, sender: Pid, reason: Any, *, link: bool) -> None:
        """Apply an exit signal to a local process, with the BEAM's rules."""
        if not link and reason is KILL:
            process._terminate(KILLED)
        elif process.trap_exit:
            process.deliver((EXIT, sender, reason))
        elif reason is not NORMAL:
            process._terminate(reason)
        elif not link and sender == process.pid:
            process._terminate(NORMAL)

    # -- a peer gone -------------------------------------------------------------------------

    def peer_lost(self, node: Atom) -> None:
        """The connection to ``node`` is gone: its links, monitors and calls end with
        ``noconnection``."""
        for local, remote in self._remote_links.pop(node, set()):
            process = self._processes.get(local)
            if process is not None:
                process.links.discard(remote)
                self.exit_signal(process, remote, NOCONNECTION, link=True)
        for ref, process in self._remote_monitors.pop(node, {}).items():
            target = process.monitors.pop(ref, None)
            if target is not None:
                process.deliver((DOWN, ref, PROCESS, target, NOCONNECTION))
        for ref, process in self._remote_watchers.pop(node, {}).items():
            process.watchers.pop(ref, None)
        for ref, call in list(self._calls.items()):
            if not call.future.done() and call.node is node:
                call.fail(NOCONNECTION, node)
                del self._calls[ref]

    def peer_unreachable(self, node: Atom, frames: list[tuple[Any, Any]]) -> None:
        """No connection to ``node`` could be made: the links and monitors that waited for
        one in ``frames`` end as on a lost node."""
        for control, _message in frames:
            kind = control[0]
            if kind == op.LINK:
                process = self._processes.get(control[1])
                if process is not None:
                    process.links.discard(control[2])
                    self.exit_signal(process, control[2], NOCONNECTION, link=True)
            elif kind == op.MONITOR_P:
                process = self._processes.get(control[1])
                ref = control[3]
                call = self._calls.pop(ref, None)
                if call is not None:
                    call.fail(NOCONNECTION, node)
                if process is not None and ref in process.monitors:
                    target = process.monitors.pop(ref)
                    self._remote_monitors.get(node, {}).pop(ref, None)
                    process.deliver((DOWN, ref, PROCESS, target, NOCONNECTION))

    # -- signals in (connection handlers) ----------------------------------------------------

    def on_link(self, connection: Connection, control: tuple[Any, ...], message: Any) -> None:
        _, sender, to = control
        _own(connection, sender)
        process = self._processes.get(to)
        if process is None:
            self.send_exit(to, sender, NOPROC, link=True)
            return
        process.links.add(sender)
        self._remote_links.setdefault(sender.node, set()).add((to, sender))

    def on_unlink(self, connection: Connection, control: tuple[Any, ...],
                  message: Any) -> None:
        sender, to = control[-2], control[-1]
        _own(connection, sender)
        process = self._processes.get(to)
        if process is not None:
            process.links.discard(sender)
        self._remote_links.get(sender.node, set()).discard((to, sender))

    def on_unlink_id(self, connection: Connection, control: tuple[Any, ...],
                     message: Any) -> None:
        _, unlink_id, sender, to = control
        # The ack must precede any other signal from us to that sender.
        connection.send((op.UNLINK_ID_ACK, unlink_id, to, sender))
        self.on_unlink(connection, control, message)

    def on_exit(self, connection: Connection, control: tuple[Any, ...], message: Any) -> None:
        sender, to = control[1], control[2]
        _own(connection, sender)
        reason = message if control[0] == op.PAYLOAD_EXIT else control[3]
        process = self._processes.get(to)
        self._remote_links.get(sender.node, set()).discard((to, sender))
        if process is not None and sender in process.links:
            process.links.discard(sender)
            self.exit_signal(process, sender, reason, link=True)

    def on_exit2(self, connection: Connection, control: tuple[Any, ...], message: Any) -> None:
        sender, to = control[1], control[2]
        _own(connection, sender)
        reason = message if control[0] == op.PAYLOAD_EXIT2 else control[3]
        process = self._processes.get(to)
        if process is not None:
            self.exit_signal(process, sender, reason, link=False)

    def on_monitor(self, connection: Connection, control: tuple[Any, ...],
                   message: Any) -> None:
        _, watcher, target, ref = control
        _own(connection, watcher)
        process = (self._processes.get(target) if type(target) is Pid
                   else self._names.get(target))
        if process is None:
            if connection.flags & dflags.EXIT_PAYLOAD:
                connection.send((op.PAYLOAD_MONITOR_P_EXIT, target, watcher, ref), NOPROC)
            else:
                connection.send((op.MONITOR_P_EXIT, target, watcher, ref, NOPROC))
            return
        process.watchers[ref] = (watcher, target)
        self._remote_watchers.setdefault(watcher.node, {})[ref] = process

    def on_demonitor(self, connection: Connection, control: tuple[Any, ...],
                     message: Any) -> None:
        _, watcher, _target, ref = control
        _own(connection, watcher)
        process = self._remote_watchers.get(watcher.node, {}).pop(ref, None)
        if process is not None:
            process.watchers.pop(ref, None)

    def on_monitor_exit(self, connection: Connection, control: tuple[Any, ...],
                        message: Any) -> None:
        source, ref = control[1], control[3]
        reason = message if control[0] == op.PAYLOAD_MONITOR_P_EXIT else control[4]
        call = self._calls.pop(ref, None)
        if call is not None:
            call.fail(reason, source)
            return
        process = self._remote_monitors.get(connection.peer, {}).pop(ref, None)
        if process is not None:
            target = process.monitors.pop(ref, None)
            if target is not None:
                process.deliver((DOWN, ref, PROCESS, target, reason))


def _own(connection: Connection, pid: Any) -> None:
    """A peer links, monitors and exits only on behalf of its own processes; anything else is
    a protocol violation that ends the connection, as on the BEAM. (Every such entry is then
    kept under the connection's node, and freed with it.)"""
    if type(pid) is not Pid or pid.node is not connection.peer:
        raise ProtocolError(f"a signal on behalf of {loggable(pid)}, which is not a process of "
                            f"{connection.peer.name}")
