"""A Python node of the Erlang distribution: listens, registers with EPMD, connects, and routes
every signal between its processes and its peers.

    async with Node("py@localhost", cookie="secret") as node:
        node.spawn(MyServer(), name="my_server")
        await node.connect("beam@localhost")

Nothing touches the event loop until :meth:`Node.start`; several nodes may share one
interpreter and one loop. The node keeps its processes and names; its connections
(:mod:`~pybroadway.erldist.connections`) and its links, monitors and exit signals
(:mod:`~pybroadway.erldist.signals`) are parts of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pybroadway.erldist import control as op
from pybroadway.erldist import epmd as epmd_client
from pybroadway.erldist import flags as dflags
from pybroadway.erldist.calls import CallError, Calls, PendingCall
from pybroadway.erldist.connection import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_INFLATED,
    DEFAULT_MAX_PENDING_OUTPUT,
    DEFAULT_MAX_TOTAL_PENDING_OUTPUT,
    Connection,
)
from pybroadway.erldist.connections import Connections, NodeWatcher, split_node_name
from pybroadway.erldist.cookie import default_cookie
from pybroadway.erldist.genserver import alias_of
from pybroadway.erldist.kernel import Kernel
from pybroadway.erldist.process import P, Process
from pybroadway.erldist.rpc import SpawnRequests
from pybroadway.erldist.settings import DistSettings
from pybroadway.erldist.signals import Signals
from pybroadway.erldist.supervisor import Supervisor
from pybroadway.erldist.tls import TlsSettings
from pybroadway.errors import ArgumentError, ArgumentTypeError, StateError
from pybroadway.term import Atom, Pid, Reference
from pybroadway.term.atoms import SHUTDOWN

__all__ = ["CallError", "Node", "NodeWatcher"]

log = logging.getLogger("pybroadway.erldist.node")

EMPTY_ATOM = Atom("")


class Node:
    """One distribution node. Options: ``cookie`` (default: ``~/.erlang.cookie``, created
    like ``erl`` does), ``hidden``, ``host`` to listen on (default loopback), ``port`` (0: any),
    ``epmd_port`` (default ``$ERL_EPMD_PORT`` or 4369; an embedded EPMD is started there when
    none answers), ``ticktime`` (seconds, like ``net_ticktime``), ``handshake_timeout``,
    ``max_frame_size`` (the largest frame a peer may send), ``max_inflated`` (the most a
    compressed term in a frame may inflate to), ``max_handshakes`` (incoming connections that
    have not shown the cookie yet; more are refused), ``max_pending_output`` (bytes a peer
    may leave unread before its connection is closed) and ``max_total_pending_output`` (all
    peers together: past it, the connection holding the most is closed), ``tls`` (a
    :class:`~pybroadway.erldist.tls.TlsSettings`: distribution over TLS, as OTP's
    ``inet_tls``) and ``ipv6`` (as ``inet6_tcp``). ``signals`` holds
    its processes' links, monitors and exits (:class:`~pybroadway.erldist.signals.Signals`).
    """

    def __init__(self, name: str, *, cookie: str | None = None, hidden: bool = False,
                 host: str | None = None, port: int = 0, epmd_port: int | None = None,
                 ticktime: float = 60.0, handshake_timeout: float = 10.0,
                 connect_timeout: float = 10.0, max_frame_size: int = DEFAULT_MAX_FRAME,
                 max_inflated: int = DEFAULT_MAX_INFLATED, max_handshakes: int = 128,
                 max_pending_output: int = DEFAULT_MAX_PENDING_OUTPUT,
                 max_total_pending_output: int = DEFAULT_MAX_TOTAL_PENDING_OUTPUT,
                 tls: TlsSettings | None = None, ipv6: bool = False) -> None:
        alive, hostname = split_node_name(name)
        self.name = Atom(f"{alive}@{hostname}")
        self.alive_name = alive
        self.hidden = hidden
        self.listen_host = epmd_client.loopback(ipv6) if host is None else host
        self.listen_port = port
        self.epmd_port = epmd_port
        self.ticktime = ticktime
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size
        self.max_inflated = max_inflated
        self.max_handshakes = max_handshakes
        self.max_pending_output = max_pending_output
        self.max_total_pending_output = max_total_pending_output
        self.tls = tls
        self.ipv6 = ipv6
        self.flags = dflags.default_flags(hidden=hidden)
        self.creation = 0
        self.log = log
        self._cookie = cookie
        self._processes: dict[Pid, Process] = {}
        self._names: dict[Atom, Process] = {}
        calls: dict[Reference, PendingCall] = {}
        self._ids = itertools.count(1)
        self._ref_counter = itertools.count(1)
        self._registration: epmd_client.EpmdRegistration | None = None
        self._embedded_epmd: epmd_client.EmbeddedEpmd | None = None
        self.rpc_functions: dict[tuple[Atom, Atom], Callable[..., Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._kernel = Kernel(self)
        self._net = net = Connections(self.start_task)
        self.signals = signals = Signals(self.name, self.make_ref, net, self._processes,
                                         self._names, calls)
        self._calls = Calls(self.name, calls, make_ref=self.make_ref, send=self.send,
                            route=net.route, local=signals.local)
        rpc = SpawnRequests(self.rpc_functions, self.new_pid, self.start_task)
        net.deliver_to({
            op.SEND: self._on_send, op.SEND_SENDER: self._on_send,
            op.REG_SEND: self._on_reg_send, op.ALIAS_SEND: self._on_alias_send,
            op.LINK: signals.on_link, op.UNLINK: signals.on_unlink,
            op.UNLINK_ID: signals.on_unlink_id, op.UNLINK_ID_ACK: self._ignore,
            op.EXIT: signals.on_exit, op.PAYLOAD_EXIT: signals.on_exit,
            op.EXIT2: signals.on_exit2, op.PAYLOAD_EXIT2: signals.on_exit2,
            op.MONITOR_P: signals.on_monitor, op.DEMONITOR_P: signals.on_demonitor,
            op.MONITOR_P_EXIT: signals.on_monitor_exit,
            op.PAYLOAD_MONITOR_P_EXIT: signals.on_monitor_exit,
            op.SPAWN_REQUEST: rpc.serve,
            op.GROUP_LEADER: self._ignore, op.SPAWN_REPLY: self._ignore,
        }, {op.SEND: self._on_sends, op.SEND_SENDER: self._on_sends,
            op.REG_SEND: self._on_reg_sends,
        }, lost=signals.peer_lost, unreachable=signals.peer_unreachable)
        # The connections' entry points the node uses, bound once: no extra hop per send.
        self._connections = net.live
        self._route = net.route

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
            raise StateError(f"{self} is already started")
        settings = DistSettings(  # the cookie file is read (or created) now, not mid-handshake
            name=self.name, cookie=self.cookie, flags=self.flags, ticktime=self.ticktime,
            handshake_timeout=self.handshake_timeout, connect_timeout=self.connect_timeout,
            max_frame_size=self.max_frame_size, max_inflated=self.max_inflated,
            max_handshakes=self.max_handshakes, max_pending_output=self.max_pending_output,
            max_total_pending_output=self.max_total_pending_output, epmd_port=self.epmd_port,
            tls=self.tls, ipv6=self.ipv6)
        port = await self._net.listen(self.listen_host, self.listen_port, settings)
        self._embedded_epmd = await epmd_client.ensure_epmd(self.epmd_port, ipv6=self.ipv6)
        if self._embedded_epmd is not None:
            log.info("no epmd was running: started an embedded one on port %d",
                     self._embedded_epmd.port)
        try:
            self._registration = await epmd_client.register(  # over ::1 with ipv6, as OTP
                self.alive_name, port, hidden=self.hidden, epmd_port=self.epmd_port,
                epmd_host=epmd_client.loopback(self.ipv6))
        except BaseException:
            await self._close_listeners()
            raise
        self.creation = self._registration.creation
        self._net.open_with(self.creation)
        self._started = True
        self._calls.caller = self.new_pid()
        await self._kernel.start(self._registration)
        log.info("node %s started (port %d, creation %d%s)", self.name.name, port,
                 self.creation, ", hidden" if self.hidden else "")

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the node stops."""
        return self._started

    @property
    def supervisor(self) -> Supervisor | None:
        """``kernel_sup``, the system processes' supervisor (None until started): the
        application's may join it (``await node.supervisor.start_child(spec)``)."""
        return self._kernel.supervisor

    async def wait_down(self) -> Any:
        """Wait until the node stops; return why it stopped by itself (its supervisor's exit
        reason), or None when it was stopped with :meth:`stop`."""
        return await self._kernel.wait_down()

    async def stop(self) -> None:
        """Stop every process, close every connection, unregister from EPMD."""
        if not self._started:
            return
        self._started = self._net.open = False
        for process in list(self._processes.values()):
            process.exit(SHUTDOWN)
        for process in list(self._processes.values()):
            with contextlib.suppress(Exception):
                await process.wait()
        await self._net.close_all()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:  # stop() itself may run in one (the supervisor gave up)
                task.cancel()
        await self._close_listeners()
        self._kernel.stopped(None)
        log.info("node %s stopped", self.name.name)

    async def _close_listeners(self) -> None:
        await self._net.stop_listening()
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

    def new_pid(self) -> Pid:
        """A new pid of this node (for a process, or one that only answers, like an rpc's)."""
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
            raise StateError(f"start {self} before spawning processes")
        pid = self.new_pid()
        self._processes[pid] = process
        process._start(self, pid)
        if name is not None:
            self.register(name, process)
        if link is not None:
            self.signals.link(process, link)
        return process

    def register(self, name: str | Atom, process: Process) -> None:
        """Register a local name; raises ValueError if it is taken."""
        atom = name if isinstance(name, Atom) else Atom(name)
        if atom in self._names and self._names[atom] is not process:
            raise ArgumentError(f"the name {atom.name} is already registered")
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

    # -- connections ------------------------------------------------------------------------

    def nodes(self) -> list[Atom]:
        """The nodes connected to this one."""
        return list(self._connections)

    def monitor_nodes(self, watcher: NodeWatcher) -> Callable[[], None]:
        """Call ``watcher(node, up)`` on every nodeup/nodedown; returns an unsubscribe."""
        return self._net.monitor_nodes(watcher)

    def connection(self, node: str | Atom) -> Connection | None:
        return self._connections.get(node if isinstance(node, Atom) else Atom(node))

    async def connect(self, node: str | Atom, *, check: bool = False) -> bool:
        """Connect to ``node`` (``name@host``); True once connected, False if it failed (with
        ``check``, raise why: a HandshakeError, an EpmdError, OSError or TimeoutError)."""
        if not self._started:
            raise StateError(f"start {self} before connecting")
        atom = node if isinstance(node, Atom) else Atom(node)
        return atom is self.name or await self._net.connect(atom, check=check)

    def disconnect(self, node: str | Atom) -> bool:
        """Drop the connection to ``node``; True if there was one."""
        connection = self.connection(node)
        if connection is None:
            return False
        connection.close("disconnected by this node")
        return True

    # -- messages ---------------------------------------------------------------------------

    def send(self, to: Any, message: Any, *, sender: Pid | None = None) -> None:
        """Send ``message`` to a pid, a local name, or ``(name, node)``; never blocks."""
        kind = type(to)
        if kind is Pid:
            if to.node is self.name:
                process = self._processes.get(to)
                if process is not None:
                    process.deliver_from(sender, message)
                elif to == self._calls.caller:
                    self._calls.reply(message)
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
                self._route(node, (op.REG_SEND, sender or self._calls.caller, EMPTY_ATOM, name),
                            message)
                return
            to = name
        if isinstance(to, str | Atom):
            process = self._names.get(to if isinstance(to, Atom) else Atom(to))
            if process is not None:
                process.deliver_from(sender, message)
            return
        raise ArgumentTypeError(f"cannot send to {to!r}: give a Pid, a name or (name, node)")

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

    def exit(self, pid: Pid, reason: Any, *, sender: Pid | None = None) -> None:
        """Send an exit signal to ``pid`` (like ``exit/2``); ``kill`` cannot be trapped."""
        self.signals.send_exit(sender or self._calls.caller or pid, pid, reason, link=False)

    # -- incoming frames --------------------------------------------------------------------

    def _on_send(self, connection: Connection, control: tuple[Any, ...], message: Any) -> None:
        # SEND {2, '', To} names no sender; SEND_SENDER {22, From, To} does.
        process = self._send_target(connection, control)
        if process is not None:
            process.deliver_from(connection.sender(control[1]), message)
        elif control[2] == self._calls.caller:
            self._calls.reply(message)

    def _on_sends(self, connection: Connection, control: tuple[Any, ...],
                  messages: list[Any]) -> None:
        """A run of sends with one control (see Connection), in order."""
        process = self._send_target(connection, control)
        if process is not None:
            process.deliver_all_from(connection.sender(control[1]), messages)
        elif control[2] == self._calls.caller:
            for message in messages:
                self._calls.reply(message)

    def _send_target(self, connection: Connection, control: tuple[Any, ...]) -> Process | None:
        # A stream's frames share one control tuple (the connection reuses it): its process
        # is looked up once (the decoded pid is not the table's object: a lookup compares in
        # Python).
        last, process = connection.route
        if last is not control or process.exit_reason is not None:
            process = self._processes.get(control[2])
            if process is None:
                return None
            connection.route = (control, process)
        return process  # type: ignore[no-any-return]

    def _on_reg_send(self, connection: Connection, control: tuple[Any, ...],
                     message: Any) -> None:
        self._on_reg_sends(connection, control, [message])

    def _on_reg_sends(self, connection: Connection, control: tuple[Any, ...],
                      messages: list[Any]) -> None:
        process = self._names.get(control[3])
        if process is not None:
            process.deliver_all_from(connection.sender(control[1]), messages)
        else:
            log.debug("%d message(s) to unregistered name %s from %s dropped", len(messages),
                      control[3], connection.peer.name)

    def _on_alias_send(self, connection: Connection, control: tuple[Any, ...],
                       message: Any) -> None:
        # We create no aliases of our own, so only replies to our calls can arrive here.
        self._calls.reply(message)

    def _ignore(self, connection: Connection, control: tuple[Any, ...], message: Any) -> None:
        pass

    # -- calling BEAM gen_servers ------------------------------------------------------------

    async def call(self, target: Any, request: Any, timeout: float | None = 5.0) -> Any:
        """``GenServer.call`` into a pid, a local name, or ``(name, node)``.

        The target is monitored for the duration of the call; raises :class:`CallError` with
        reason ``noproc``, ``noconnection``, the target's exit reason, or ``timeout``.
        A reply that arrives after the timeout is dropped.
        """
        return await self._calls.call(target, request, timeout)

    def cast(self, target: Any, request: Any) -> None:
        """``GenServer.cast``: send ``{'$gen_cast', request}``; never fails."""
        self._calls.cast(target, request)

    # -- rpc ------------------------------------------------------------------------------

    def expose(self, module: str, function: str, func: Callable[..., Any | Awaitable[Any]]
               ) -> None:
        """Let ``:rpc.call(node, module, function, args)`` run ``func(*args)`` here."""
        self.rpc_functions[(Atom(module), Atom(function))] = func
