"""A Python node of the Erlang distribution: listens, registers with EPMD, connects, and routes
every signal between its processes and its peers.

    async with Node("py@localhost", cookie="secret") as node:
        node.spawn(MyServer(), name="my_server")
        await node.connect("beam@localhost")

Nothing touches the event loop until :meth:`Node.start`; several nodes may share one
interpreter and one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from pybroadway.erldist import control as op
from pybroadway.erldist import epmd as epmd_client
from pybroadway.erldist import flags as dflags
from pybroadway.erldist import handshake
from pybroadway.erldist.connection import DEFAULT_MAX_FRAME, NO_MESSAGE, Connection
from pybroadway.erldist.cookie import default_cookie
from pybroadway.erldist.genserver import alias_of
from pybroadway.erldist.process import Process
from pybroadway.errors import PyBroadwayError
from pybroadway.term import Atom, Encoder, Pid, Reference
from pybroadway.term.atoms import (
    DOWN,
    EXIT,
    GEN_CALL,
    GEN_CAST,
    KILL,
    KILLED,
    NOCONNECTION,
    NOPROC,
    NORMAL,
    PROCESS,
    SHUTDOWN,
    TIMEOUT,
)

log = logging.getLogger("pybroadway.erldist.node")

P = TypeVar("P", bound=Process)

EMPTY_ATOM = Atom("")

NodeWatcher = Callable[[Atom, bool], None]


class CallError(PyBroadwayError):
    """A :meth:`Node.call` failed: the target is gone, the node unreachable, or it timed out.

    ``reason`` is the Erlang-style reason (``noproc``, ``noconnection``, ``timeout``, or the
    target's exit reason).
    """

    def __init__(self, reason: Any, target: Any) -> None:
        super().__init__(f"call to {target!r} failed: {reason!r}")
        self.reason = reason
        self.target = target


def _split(name: str) -> tuple[str, str]:
    if "@" in name:
        alive, host = name.split("@", 1)
    else:
        alive, host = name, socket.gethostname().split(".")[0]
    if not alive or not host:
        raise ValueError(f"a node name looks like name@host, not {name!r}")
    return alive, host


class Node:
    """One distribution node.

    Options: ``cookie`` (default: ``~/.erlang.cookie``, created like ``erl`` does), ``hidden``,
    ``host`` to listen on (default loopback), ``port`` (0: any), ``epmd_port`` (default
    ``$ERL_EPMD_PORT`` or 4369; an embedded EPMD is started there when none answers),
    ``ticktime`` (seconds, like ``net_ticktime``), ``handshake_timeout``, ``max_frame_size``.
    """

    def __init__(self, name: str, *, cookie: str | None = None, hidden: bool = False,
                 host: str = "127.0.0.1", port: int = 0, epmd_port: int | None = None,
                 ticktime: float = 60.0, handshake_timeout: float = 10.0,
                 connect_timeout: float = 10.0, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        alive, hostname = _split(name)
        self.name = Atom(f"{alive}@{hostname}")
        self.alive_name = alive
        self.hidden = hidden
        self.listen_host = host
        self.listen_port = port
        self.epmd_port = epmd_port
        self.ticktime = ticktime
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size
        self.flags = dflags.default_flags(hidden=hidden)
        self.creation = 0
        self.log = log
        self._cookie = cookie
        self._encoder = Encoder()
        self._processes: dict[Pid, Process] = {}
        self._names: dict[Atom, Process] = {}
        self._connections: dict[Atom, Connection] = {}
        self._connecting: dict[Atom, asyncio.Future[Connection]] = {}
        self._queued: dict[Atom, list[tuple[Any, Any]]] = {}
        self._remote_links: dict[Atom, set[tuple[Pid, Pid]]] = {}
        self._remote_monitors: dict[Atom, dict[Reference, Process]] = {}
        self._remote_watchers: dict[Atom, dict[Reference, Process]] = {}
        self._node_watchers: list[NodeWatcher] = []
        self._calls: dict[Reference, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._unlink_ids = itertools.count(1)
        self._ref_counter = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._registration: epmd_client.EpmdRegistration | None = None
        self._embedded_epmd: epmd_client.EmbeddedEpmd | None = None
        self._call_pid: Pid | None = None
        self.rpc_functions: dict[tuple[Atom, Atom], Callable[..., Any]] = {}
        self._handlers: dict[int, Callable[[Connection, tuple[Any, ...], Any], None]] = {
            op.SEND: self._on_send, op.SEND_SENDER: self._on_send,
            op.REG_SEND: self._on_reg_send, op.ALIAS_SEND: self._on_alias_send,
            op.LINK: self._on_link, op.UNLINK: self._on_unlink,
            op.UNLINK_ID: self._on_unlink_id, op.UNLINK_ID_ACK: self._ignore,
            op.EXIT: self._on_exit, op.PAYLOAD_EXIT: self._on_exit,
            op.EXIT2: self._on_exit2, op.PAYLOAD_EXIT2: self._on_exit2,
            op.MONITOR_P: self._on_monitor, op.DEMONITOR_P: self._on_demonitor,
            op.MONITOR_P_EXIT: self._on_monitor_exit,
            op.PAYLOAD_MONITOR_P_EXIT: self._on_monitor_exit,
            op.SPAWN_REQUEST: self._on_spawn_request, op.GROUP_LEADER: self._ignore,
            op.SPAWN_REPLY: self._ignore,
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False

    def __repr__(self) -> str:
        return f"<Node {self.name.name} creation={self.creation}>"

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def cookie(self) -> str:
        if self._cookie is None:
            self._cookie = default_cookie()
        return self._cookie

    async def start(self) -> None:
        """Listen, register with EPMD (starting an embedded one if none answers)."""
        if self._started:
            raise RuntimeError(f"{self} is already started")
        self.cookie  # noqa: B018 - read (or create) the cookie file now, not mid-handshake
        self._server = await asyncio.start_server(self._on_accept, self.listen_host,
                                                  self.listen_port)
        port = self._server.sockets[0].getsockname()[1]
        self._embedded_epmd = await epmd_client.ensure_epmd(self.epmd_port)
        if self._embedded_epmd is not None:
            log.info("no epmd was running: started an embedded one on port %d",
                     self._embedded_epmd.port)
        try:
            self._registration = await epmd_client.register(
                self.alive_name, port, hidden=self.hidden, epmd_port=self.epmd_port)
        except BaseException:
            await self._close_listeners()
            raise
        self.creation = self._registration.creation
        self._started = True
        self._call_pid = self._new_pid()
        for name, factory in _BUILTINS.items():
            self.spawn(factory(), name=name)
        log.info("node %s started (port %d, creation %d%s)", self.name.name, port,
                 self.creation, ", hidden" if self.hidden else "")

    async def stop(self) -> None:
        """Stop every process, close every connection, unregister from EPMD."""
        if not self._started:
            return
        self._started = False
        for process in list(self._processes.values()):
            process.exit(SHUTDOWN)
        for process in list(self._processes.values()):
            with contextlib.suppress(Exception):
                await process.wait()
        for connection in list(self._connections.values()):
            connection.close("node stopping")
            await connection.wait_closed()
        for future in self._connecting.values():
            future.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self._close_listeners()
        log.info("node %s stopped", self.name.name)

    async def _close_listeners(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._registration is not None:
            await self._registration.close()
            self._registration = None
        if self._embedded_epmd is not None:
            await self._embedded_epmd.close()
            self._embedded_epmd = None

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_task(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in a task the node keeps a reference to until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- identifiers ------------------------------------------------------------------------

    def _new_pid(self) -> Pid:
        number = next(self._ids)
        return Pid(self.name, number & 0x7FFF_FFFF, number >> 31, self.creation)

    def make_ref(self) -> Reference:
        """A new reference of this node (3 id words, like the BEAM's)."""
        n = next(self._ref_counter)
        return Reference(self.name, self.creation,
                         (n & 0x3FFFF, secrets.randbits(32), secrets.randbits(32)))

    # -- processes --------------------------------------------------------------------------

    def spawn(self, process: P, *, name: str | Atom | None = None,
              link: Pid | None = None) -> P:
        """Start ``process`` on this node (optionally registered as ``name``)."""
        if not self._started:
            raise RuntimeError(f"start {self} before spawning processes")
        pid = self._new_pid()
        self._processes[pid] = process
        process._start(self, pid)
        if name is not None:
            self.register(name, process)
        if link is not None:
            self._link(process, link)
        return process

    def register(self, name: str | Atom, process: Process) -> None:
        """Register a local name; raises ValueError if it is taken."""
        atom = name if isinstance(name, Atom) else Atom(name)
        if atom in self._names and self._names[atom] is not process:
            raise ValueError(f"the name {atom.name} is already registered")
        self._names[atom] = process
        process.names.add(atom)

    def unregister(self, name: str | Atom) -> None:
        atom = name if isinstance(name, Atom) else Atom(name)
        process = self._names.pop(atom, None)
        if process is not None:
            process.names.discard(atom)

    def whereis(self, name: str | Atom) -> Pid | None:
        process = self._names.get(name if isinstance(name, Atom) else Atom(name))
        return process.pid if process is not None else None

    def process(self, pid: Pid) -> Process | None:
        return self._processes.get(pid)

    @property
    def registered(self) -> list[Atom]:
        return list(self._names)

    def _process_exited(self, process: Process, reason: Any) -> None:
        self._processes.pop(process.pid, None)
        for name in list(process.names):
            if self._names.get(name) is process:
                del self._names[name]
        me = process.pid
        for pid in process.links:
            self._send_exit(me, pid, reason, link=True)
        process.links.clear()
        for ref, (watcher, target) in process.watchers.items():
            self._send_down(watcher, ref, target, me, reason)
        process.watchers.clear()
        for ref, target in process.monitors.items():
            node = self._node_of(target)
            if node is not self.name:
                self._remote_monitors.get(node, {}).pop(ref, None)
                self._route(node, (op.DEMONITOR_P, me, self._remote_target(target), ref))
        process.monitors.clear()

    # -- connections ------------------------------------------------------------------------

    def nodes(self) -> list[Atom]:
        """The nodes connected to this one."""
        return list(self._connections)

    def monitor_nodes(self, watcher: NodeWatcher) -> Callable[[], None]:
        """Call ``watcher(node, up)`` on every nodeup/nodedown; returns an unsubscribe."""
        self._node_watchers.append(watcher)
        return lambda: self._node_watchers.remove(watcher)

    def connection(self, node: str | Atom) -> Connection | None:
        return self._connections.get(node if isinstance(node, Atom) else Atom(node))

    async def connect(self, node: str | Atom) -> bool:
        """Connect to ``node`` (``name@host``); True once connected, False if it failed."""
        atom = node if isinstance(node, Atom) else Atom(node)
        if atom is self.name:
            return True
        try:
            await self._ensure_connection(atom)
        except (OSError, handshake.HandshakeError, epmd_client.EpmdError, TimeoutError) as exc:
            log.warning("could not connect to %s: %s", atom.name, exc)
            return False
        return True

    def disconnect(self, node: str | Atom) -> bool:
        """Drop the connection to ``node``; True if there was one."""
        connection = self.connection(node)
        if connection is None:
            return False
        connection.close("disconnected by this node")
        return True

    def _ensure_connection(self, node: Atom) -> asyncio.Future[Connection]:
        connection = self._connections.get(node)
        loop = asyncio.get_running_loop()
        if connection is not None:
            future: asyncio.Future[Connection] = loop.create_future()
            future.set_result(connection)
            return future
        future = self._connecting.get(node)  # type: ignore[assignment]
        if future is None:
            future = loop.create_future()
            self._connecting[node] = future
            self.start_task(self._dial(node, future), name=f"dist-connect-{node.name}")
        return future

    async def _dial(self, node: Atom, future: asyncio.Future[Connection]) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                alive, host = _split(node.name)
                address = await epmd_client.port_please(alive, _resolve(host),
                                                        epmd_port=self.epmd_port)
                if address is None:
                    raise epmd_client.EpmdError(f"{node.name} is not registered with epmd")
                reader, writer = await asyncio.open_connection(_resolve(host), address.port)
                try:
                    peer = await handshake.connect(
                        reader, writer, our_name=self.name.name, cookie=self.cookie,
                        creation=self.creation, flags=self.flags, peer_name=node.name,
                        timeout=self.handshake_timeout)
                except handshake.HandshakeRejected as exc:
                    if exc.status == "nok" and node in self._connecting:
                        # Both sides dialled; the peer's own attempt wins. Wait for it.
                        await asyncio.shield(future)
                        return
                    raise
            if not future.done():
                self._connection_up(peer, reader, writer)
        except BaseException as exc:
            if self._connecting.get(node) is future:
                del self._connecting[node]
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else
                                     ConnectionError(f"connect to {node.name} cancelled"))
                future.exception()  # a failed connect need not be awaited by anyone
                self._flush_queue_failed(node)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _on_accept(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            peer = await handshake.accept(
                reader, writer, our_name=self.name.name, cookie=self.cookie,
                creation=self.creation, flags=self.flags, on_name=self._status_for,
                timeout=self.handshake_timeout)
        except handshake.HandshakeError:
            return  # logged by the handshake, naming the peer
        except Exception:
            log.exception("unexpected error in an incoming handshake")
            return
        old = self._connections.get(Atom(peer.name))
        if old is not None:
            old.close("replaced by a new connection from the same node")
        self._connection_up(peer, reader, writer)

    def _status_for(self, peer_name: str, peer_flags: int) -> str:
        peer = Atom(peer_name)
        if not self._started:
            return "not_allowed"
        if peer in self._connections:
            return "alive"
        if peer in self._connecting:
            # Simultaneous connect: the greater name keeps its own attempt (dist_util rule).
            return "nok" if self.name.name > peer_name else "ok_simultaneous"
        return "ok"

    def _connection_up(self, peer: handshake.PeerInfo, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        node = Atom(peer.name)
        connection = Connection(
            node, peer.flags & self.flags, reader, writer, encoder=self._encoder,
            handlers=self._handlers, on_closed=self._connection_down, ticktime=self.ticktime,
            max_frame_size=self.max_frame_size)
        self._connections[node] = connection
        future = self._connecting.pop(node, None)
        if future is not None and not future.done():
            future.set_result(connection)
        for control, message in self._queued.pop(node, []):
            connection.send(control, message)
        log.info("node %s connected%s", node.name, " (hidden)" if peer.hidden else "")
        for watcher in list(self._node_watchers):
            self._notify(watcher, node, True)

    def _notify(self, watcher: NodeWatcher, node: Atom, up: bool) -> None:
        try:
            watcher(node, up)
        except Exception:
            log.exception("node watcher %r failed", watcher)

    def _connection_down(self, connection: Connection, reason: str) -> None:
        node = connection.peer
        if self._connections.get(node) is not connection:
            return
        del self._connections[node]
        log.info("node %s disconnected: %s", node.name, reason)
        for local, remote in self._remote_links.pop(node, set()):
            process = self._processes.get(local)
            if process is not None:
                process.links.discard(remote)
                self._exit_signal(process, remote, NOCONNECTION, link=True)
        for ref, process in self._remote_monitors.pop(node, {}).items():
            target = process.monitors.pop(ref, None)
            if target is not None:
                process.deliver((DOWN, ref, PROCESS, target, NOCONNECTION))
        for ref, process in self._remote_watchers.pop(node, {}).items():
            process.watchers.pop(ref, None)
        for ref, future in list(self._calls.items()):
            if not future.done() and getattr(future, "node", None) is node:
                future.set_exception(CallError(NOCONNECTION, node))
                del self._calls[ref]
        for watcher in list(self._node_watchers):
            self._notify(watcher, node, False)

    # -- routing ----------------------------------------------------------------------------

    def _route(self, node: Atom, control: Any, message: Any = NO_MESSAGE) -> None:
        """Send a frame to ``node``, connecting on demand as the BEAM does."""
        connection = self._connections.get(node)
        if connection is not None:
            connection.send(control, message)
            return
        if not self._started:
            return
        self._queued.setdefault(node, []).append((control, message))
        self._ensure_connection(node)

    def _flush_queue_failed(self, node: Atom) -> None:
        """A connection could not be made: what waited for it fails as on a lost node."""
        for control, _message in self._queued.pop(node, []):
            kind = control[0]
            if kind == op.LINK:
                process = self._processes.get(control[1])
                if process is not None:
                    process.links.discard(control[2])
                    self._exit_signal(process, control[2], NOCONNECTION, link=True)
            elif kind == op.MONITOR_P:
                process = self._processes.get(control[1])
                ref = control[3]
                call = self._calls.pop(ref, None)
                if call is not None and not call.done():
                    call.set_exception(CallError(NOCONNECTION, node))
                if process is not None and ref in process.monitors:
                    target = process.monitors.pop(ref)
                    self._remote_monitors.get(node, {}).pop(ref, None)
                    process.deliver((DOWN, ref, PROCESS, target, NOCONNECTION))

    def _node_of(self, target: Any) -> Atom:
        if type(target) is Pid:
            return target.node
        if type(target) is tuple and len(target) == 2:
            node = target[1]
            return node if isinstance(node, Atom) else Atom(node)
        return self.name

    @staticmethod
    def _remote_target(target: Any) -> Any:
        if type(target) is tuple:
            return target[0] if isinstance(target[0], Atom) else Atom(target[0])
        return target

    def send(self, to: Any, message: Any, *, sender: Pid | None = None) -> None:
        """Send ``message`` to a pid, a local name, or ``(name, node)``; never blocks."""
        kind = type(to)
        if kind is Pid:
            if to.node is self.name:
                process = self._processes.get(to)
                if process is not None:
                    process.deliver_from(sender, message)
                elif to == self._call_pid:
                    self._call_reply(message)
                return
            if sender is not None and self.flags & dflags.SEND_SENDER:
                self._route(to.node, (op.SEND_SENDER, sender, to), message)
            else:
                self._route(to.node, (op.SEND, EMPTY_ATOM, to), message)
            return
        if kind is tuple and len(to) == 2:
            name, node = to
            name = name if isinstance(name, Atom) else Atom(name)
            node = node if isinstance(node, Atom) else Atom(node)
            if node is not self.name:
                self._route(node, (op.REG_SEND, sender or self._call_pid, EMPTY_ATOM, name),
                            message)
                return
            to = name
        if isinstance(to, str | Atom):
            process = self._names.get(to if isinstance(to, Atom) else Atom(to))
            if process is not None:
                process.deliver_from(sender, message)
            return
        raise TypeError(f"cannot send to {to!r}: give a Pid, a name or (name, node)")

    def send_alias(self, sender: Pid, alias: Reference, message: Any) -> None:
        """Send to a process alias (ALIAS_SEND)."""
        self._route(alias.node, (op.ALIAS_SEND, sender, alias), message)

    def gen_reply(self, sender: Pid, to: Pid, tag: Any, reply: Any) -> None:
        """Answer a gen call: to the alias in ``tag`` when the caller can take it, else to
        the caller's pid; the tag is echoed verbatim."""
        alias = alias_of(tag)
        if alias is not None and to.node is not self.name:
            connection = self._connections.get(to.node)
            if connection is not None and connection.flags & dflags.ALIAS:
                connection.send((op.ALIAS_SEND, sender, alias), (tag, reply))
                return
        self.send(to, (tag, reply), sender=sender)

    # -- links, monitors, exits ------------------------------------------------------------

    def _link(self, process: Process, pid: Pid) -> None:
        if pid in process.links:
            return
        if pid.node is self.name:
            other = self._processes.get(pid)
            if other is None:
                self._exit_signal(process, pid, NOPROC, link=True)
                return
            process.links.add(pid)
            other.links.add(process.pid)
            return
        process.links.add(pid)
        self._remote_links.setdefault(pid.node, set()).add((process.pid, pid))
        self._route(pid.node, (op.LINK, process.pid, pid))

    def _unlink(self, process: Process, pid: Pid) -> None:
        if pid not in process.links:
            return
        process.links.discard(pid)
        if pid.node is self.name:
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

    def _monitor(self, process: Process, target: Any) -> Reference:
        ref = self.make_ref()
        node = self._node_of(target)
        if node is self.name:
            name = self._remote_target(target) if type(target) is tuple else target
            watched = (self._processes.get(name) if type(name) is Pid
                       else self._names.get(name if isinstance(name, Atom) else Atom(name)))
            if watched is None:
                process.deliver((DOWN, ref, PROCESS, target, NOPROC))
            else:
                process.monitors[ref] = target
                watched.watchers[ref] = (process.pid, target)
            return ref
        process.monitors[ref] = target
        self._remote_monitors.setdefault(node, {})[ref] = process
        self._route(node, (op.MONITOR_P, process.pid, self._remote_target(target), ref))
        return ref

    def _demonitor(self, process: Process, ref: Reference) -> None:
        target = process.monitors.pop(ref, None)
        if target is None:
            return
        node = self._node_of(target)
        if node is self.name:
            name = self._remote_target(target) if type(target) is tuple else target
            watched = (self._processes.get(name) if type(name) is Pid
                       else self._names.get(name if isinstance(name, Atom) else Atom(name)))
            if watched is not None:
                watched.watchers.pop(ref, None)
            return
        self._remote_monitors.get(node, {}).pop(ref, None)
        self._route(node, (op.DEMONITOR_P, process.pid, self._remote_target(target), ref))

    def _send_exit(self, sender: Pid, to: Pid, reason: Any, *, link: bool) -> None:
        if to.node is self.name:
            process = self._processes.get(to)
            if process is not None:
                if link:
                    process.links.discard(sender)
                self._exit_signal(process, sender, reason, link=link)
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

    def _send_down(self, watcher: Pid, ref: Reference, target: Any, pid: Pid,
                   reason: Any) -> None:
        if watcher.node is self.name:
            call = self._calls.pop(ref, None)
            if call is not None:  # a Node.call to a local process
                if not call.done():
                    call.set_exception(CallError(reason, target))
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

    def _exit_signal(self, process: Process, sender: Pid, reason: Any, *, link: bool) -> None:
        """Apply an exit signal to a local process, with the BEAM's rules."""
        if not link and reason is KILL:
            process._terminate(KILLED)
        elif process.trap_exit:
            process.deliver((EXIT, sender, reason))
        elif reason is not NORMAL:
            process._terminate(reason)
        elif not link and sender == process.pid:
            process._terminate(NORMAL)

    def exit(self, pid: Pid, reason: Any, *, sender: Pid | None = None) -> None:
        """Send an exit signal to ``pid`` (like ``exit/2``); ``kill`` cannot be trapped."""
        self._send_exit(sender or self._call_pid or pid, pid, reason, link=False)

    # -- incoming frames --------------------------------------------------------------------

    def _on_send(self, connection: Connection, control: tuple[Any, ...], message: Any) -> None:
        # SEND {2, '', To} names no sender; SEND_SENDER {22, From, To} does.
        to = control[2]
        process = self._processes.get(to)
        if process is not None:
            sender = control[1]
            process.deliver_from(sender if type(sender) is Pid else None, message)
        elif to == self._call_pid:
            self._call_reply(message)

    def _on_reg_send(self, connection: Connection, control: tuple[Any, ...],
                     message: Any) -> None:
        process = self._names.get(control[3])
        if process is not None:
            process.deliver_from(control[1], message)
        else:
            log.debug("message to unregistered name %s from %s dropped", control[3],
                      connection.peer.name)

    def _on_alias_send(self, connection: Connection, control: tuple[Any, ...],
                       message: Any) -> None:
        # We create no aliases of our own, so only replies to our calls can arrive here.
        self._call_reply(message)

    def _on_link(self, connection: Connection, control: tuple[Any, ...], message: Any) -> None:
        _, sender, to = control
        process = self._processes.get(to)
        if process is None:
            self._send_exit(to, sender, NOPROC, link=True)
            return
        process.links.add(sender)
        self._remote_links.setdefault(sender.node, set()).add((to, sender))

    def _on_unlink(self, connection: Connection, control: tuple[Any, ...],
                   message: Any) -> None:
        sender, to = control[-2], control[-1]
        process = self._processes.get(to)
        if process is not None:
            process.links.discard(sender)
        self._remote_links.get(sender.node, set()).discard((to, sender))

    def _on_unlink_id(self, connection: Connection, control: tuple[Any, ...],
                      message: Any) -> None:
        _, unlink_id, sender, to = control
        # The ack must precede any other signal from us to that sender.
        connection.send((op.UNLINK_ID_ACK, unlink_id, to, sender))
        self._on_unlink(connection, control, message)

    def _on_exit(self, connection: Connection, control: tuple[Any, ...], message: Any) -> None:
        sender, to = control[1], control[2]
        reason = message if control[0] == op.PAYLOAD_EXIT else control[3]
        process = self._processes.get(to)
        self._remote_links.get(sender.node, set()).discard((to, sender))
        if process is not None and sender in process.links:
            process.links.discard(sender)
            self._exit_signal(process, sender, reason, link=True)

    def _on_exit2(self, connection: Connection, control: tuple[Any, ...], message: Any) -> None:
        sender, to = control[1], control[2]
        reason = message if control[0] == op.PAYLOAD_EXIT2 else control[3]
        process = self._processes.get(to)
        if process is not None:
            self._exit_signal(process, sender, reason, link=False)

    def _on_monitor(self, connection: Connection, control: tuple[Any, ...],
                    message: Any) -> None:
        _, watcher, target, ref = control
        process = (self._processes.get(target) if type(target) is Pid
                   else self._names.get(target))
        if process is None:
            self._reply_noproc(connection, watcher, target, ref)
            return
        process.watchers[ref] = (watcher, target)
        self._remote_watchers.setdefault(watcher.node, {})[ref] = process

    def _reply_noproc(self, connection: Connection, watcher: Pid, target: Any,
                      ref: Reference) -> None:
        if connection.flags & dflags.EXIT_PAYLOAD:
            connection.send((op.PAYLOAD_MONITOR_P_EXIT, target, watcher, ref), NOPROC)
        else:
            connection.send((op.MONITOR_P_EXIT, target, watcher, ref, NOPROC))

    def _on_demonitor(self, connection: Connection, control: tuple[Any, ...],
                      message: Any) -> None:
        _, watcher, _target, ref = control
        process = self._remote_watchers.get(watcher.node, {}).pop(ref, None)
        if process is not None:
            process.watchers.pop(ref, None)

    def _on_monitor_exit(self, connection: Connection, control: tuple[Any, ...],
                         message: Any) -> None:
        source, ref = control[1], control[3]
        reason = message if control[0] == op.PAYLOAD_MONITOR_P_EXIT else control[4]
        future = self._calls.get(ref)
        if future is not None:
            del self._calls[ref]
            if not future.done():
                future.set_exception(CallError(reason, source))
            return
        process = self._remote_monitors.get(connection.peer, {}).pop(ref, None)
        if process is not None:
            target = process.monitors.pop(ref, None)
            if target is not None:
                process.deliver((DOWN, ref, PROCESS, target, reason))

    def _on_spawn_request(self, connection: Connection, control: tuple[Any, ...],
                          message: Any) -> None:
        from pybroadway.erldist.rpc import serve_spawn_request
        serve_spawn_request(self, connection, control, message)

    def _ignore(self, connection: Connection, control: tuple[Any, ...], message: Any) -> None:
        pass

    # -- calling BEAM gen_servers ------------------------------------------------------------

    async def call(self, target: Any, request: Any, timeout: float | None = 5.0) -> Any:
        """``GenServer.call`` into a pid, a local name, or ``(name, node)``.

        The target is monitored for the duration of the call; raises :class:`CallError` with
        reason ``noproc``, ``noconnection``, the target's exit reason, or ``timeout``.
        A reply that arrives after the timeout is dropped.
        """
        caller = self._call_pid
        if caller is None:
            raise RuntimeError(f"start {self} before calling")
        node = self._node_of(target)
        if node is self.name:
            name = self._remote_target(target) if type(target) is tuple else target
            local = self._names.get(Atom(name) if isinstance(name, str) else name) \
                if not isinstance(name, Pid) else self._processes.get(name)
            if local is None:
                raise CallError(NOPROC, target)
        ref = self.make_ref()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.node = node  # type: ignore[attr-defined]
        self._calls[ref] = future
        if node is not self.name:
            self._route(node, (op.MONITOR_P, caller, self._remote_target(target), ref))
        else:
            assert local is not None
            local.watchers[ref] = (caller, target)  # its exit fails the call (_send_down)
        self.send(target, (GEN_CALL, (caller, ref), request), sender=caller)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise CallError(TIMEOUT, target) from None
        finally:
            if self._calls.pop(ref, None) is not None:
                if node is not self.name:
                    self._route(node, (op.DEMONITOR_P, caller, self._remote_target(target),
                                       ref))
                elif local is not None:
                    local.watchers.pop(ref, None)

    def cast(self, target: Any, request: Any) -> None:
        """``GenServer.cast``: send ``{'$gen_cast', request}``; never fails."""
        self.send(target, (GEN_CAST, request), sender=self._call_pid)

    def _call_reply(self, message: Any) -> None:
        if type(message) is tuple and len(message) == 2:
            future = self._calls.get(message[0])
            if future is not None and not future.done():
                future.set_result(message[1])
                return
        log.debug("late or unexpected reply dropped: %r", message)

    # -- rpc ------------------------------------------------------------------------------

    def expose(self, module: str, function: str, func: Callable[..., Any | Awaitable[Any]]
               ) -> None:
        """Let ``:rpc.call(node, module, function, args)`` run ``func(*args)`` here."""
        self.rpc_functions[(Atom(module), Atom(function))] = func


def _resolve(host: str) -> str:
    return "127.0.0.1" if host == "localhost" else host


_BUILTINS: dict[str, Callable[[], Process]] = {}


def builtin(name: str) -> Callable[[Callable[[], Process]], Callable[[], Process]]:
    """Register a process every node starts under ``name`` (net_kernel, rex, …)."""
    def register(factory: Callable[[], Process]) -> Callable[[], Process]:
        _BUILTINS[name] = factory
        return factory
    return register
