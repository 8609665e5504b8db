"""A node's connections to its peers, as net_kernel and dist_util keep them: the live ones, the
ones being made, the frames waiting for one; dialling, accepting, the simultaneous-connect
rule, nodeup and nodedown.

As in net_kernel, a peer has at most one *pending* connection, owned by one task: the dial
this node started, or a handshake it accepted (from the moment it answered the peer's name,
``alive`` included: a peer that dials while we still hold its old connection replaces it, and
what is sent once the old one is gone waits for the new one, as net_kernel's ``up_pending``).
A connect to a peer with a pending connection waits for it instead of dialling a second one;
when both nodes dial each other, the node with the smaller name takes the peer's attempt
(``ok_simultaneous``) over from its own dial, the other refuses it (``nok``) and keeps its own;
and a dial told ``alive`` (the peer has a connection to us) asks for it to be replaced only
while it still owns the pending connection (dist_util's ``is_pending``). Otherwise two nodes
meeting from both sides at once could each end up holding a different connection, one of
which the other then closes: a nodedown in the middle of a connect, which ``global`` answers
by cutting the cluster apart to prevent overlapping partitions.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from pybroadway._throttle import Throttle
from pybroadway.erldist import epmd as epmd_client
from pybroadway.erldist import handshake, tls_failures
from pybroadway.erldist.connection import NO_MESSAGE, Connection, Handler, RunHandler
from pybroadway.erldist.framing import Handover, take_over
from pybroadway.erldist.handshake_io import peername
from pybroadway.erldist.settings import DistSettings
from pybroadway.errors import ArgumentError
from pybroadway.term import Atom, Encoder

log = logging.getLogger("pybroadway.erldist.node")

NodeWatcher = Callable[[Atom, bool], None]


class StartTask(Protocol):
    """Runs ``coro`` in a task named ``name`` that its owner keeps a reference to until it
    ends (:meth:`~pybroadway.erldist.node.Node.start_task`)."""

    def __call__(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]: ...


CLOSE_GRACE = 2.0
"""Seconds a stopping node waits for its last writes to be read before it drops them."""


def split_node_name(name: str) -> tuple[str, str]:
    """``name@host`` as ``(name, host)``; a bare name gets this machine's short host name.
    One ``@`` only, as dist_util:split_node takes a name to dial (the host may be an IPv6
    address: ``py@::1``)."""
    if "@" in name:
        alive, host = name.split("@", 1)
    else:
        alive, host = name, socket.gethostname().split(".")[0]
    if not alive or not host or "@" in host:
        raise ArgumentError(f"a node name looks like name@host, not {name!r}")
    return alive, host


async def _resolve(host: str, ipv6: bool) -> str:
    """The address of ``host`` in the node's family (inet:getaddr(Host, inet | inet6), as
    inet_tcp_dist and inet6_tcp_dist take it): the peer's EPMD is asked there, and the peer
    dialled there."""
    if host == "localhost":
        return epmd_client.loopback(ipv6)
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, None, family=family,
                                                             type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        version, proto = ("IPv6", "inet6_tcp") if ipv6 else ("IPv4", "inet_tcp")
        raise ConnectionError(f"{host} has no {version} address ({exc.strerror}); this node "
                              f"runs {version} distribution ({proto})") from None
    return str(found[0][4][0])


class Connections:
    """A node's connections, one per peer; its tasks (dials) run through ``start_task``.

    ``live`` maps each connected peer to its :class:`Connection`. While ``open`` (from
    :meth:`open_with`, once the node is registered, until the node stops) handshakes are
    accepted and a frame for a peer with no connection waits for one to be dialled.
    """

    _settings: DistSettings
    _creation: int
    _handlers: Mapping[int, Handler]
    _runs: Mapping[int, RunHandler]
    _lost: Callable[[Atom], None]
    _unreachable: Callable[[Atom, list[tuple[Any, Any]]], None]

    def __init__(self, start_task: StartTask) -> None:
        self._start_task = start_task
        self.open = False
        self.live: dict[Atom, Connection] = {}
        self._connecting: dict[Atom, asyncio.Future[Connection]] = {}
        # peer name -> the task owning its pending connection (a dial or an accepted
        # handshake). By name: an accepted handshake has not shown the cookie yet, so its
        # name is not made an atom; these are bounded by the dials and max_handshakes.
        self._pending: dict[str, asyncio.Task[Any]] = {}
        self._dials: set[asyncio.Task[Any]] = set()  # the tasks dialling a peer
        self._queued: dict[Atom, list[tuple[Any, Any]]] = {}
        self._watchers: list[NodeWatcher] = []
        self._encoder = Encoder()
        self._server: asyncio.Server | None = None
        self._handshaking = 0
        self._refusals = Throttle(log, logging.WARNING, "refused connections", burst=1)

    def deliver_to(self, handlers: Mapping[int, Handler], runs: Mapping[int, RunHandler], *,
                   lost: Callable[[Atom], None],
                   unreachable: Callable[[Atom, list[tuple[Any, Any]]], None]) -> None:
        """Where what arrives goes: each frame to ``handlers[op]`` (runs of like frames to
        ``runs[op]``, see :class:`Connection`); a peer whose connection is gone to
        ``lost(peer)``, one that could not be reached to ``unreachable(peer, frames)`` with
        the frames that waited for it. Set once, before the node starts."""
        self._handlers = handlers
        self._runs = runs
        self._lost = lost
        self._unreachable = unreachable

    # -- listening ---------------------------------------------------------------------------

    async def listen(self, host: str, port: int, settings: DistSettings) -> int:
        """Start listening on ``host:port`` (returns the port bound), with ``settings`` for
        every connection from now on; handshakes are refused until :meth:`open`."""
        self._settings = settings
        self._server = await asyncio.start_server(  # ipv6: on IPv6 addresses only
            self._on_accept, host, port, family=socket.AF_INET6 if settings.ipv6 else 0)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    def open_with(self, creation: int) -> None:
        """Accept handshakes and dial peers as the node incarnation ``creation`` (EPMD's
        answer to the registration of the port :meth:`listen` bound)."""
        self._creation = creation
        self.open = True

    async def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def close_all(self) -> None:
        """Close every connection and abandon every connect in progress. What is still
        waiting to be written gets :data:`CLOSE_GRACE` seconds to go out: a peer that reads
        nothing cannot keep the node from stopping."""
        closing = list(self.live.values())
        for connection in closing:
            connection.close("node stopping")
        if closing:
            waits = [asyncio.ensure_future(connection.wait_closed()) for connection in closing]
            _, late = await asyncio.wait(waits, timeout=CLOSE_GRACE)
            for connection, wait in zip(closing, waits, strict=True):
                if wait in late:
                    connection.abort()
            await asyncio.gather(*late, return_exceptions=True)
        for future in self._connecting.values():
            future.cancel()

    # -- nodeup / nodedown -------------------------------------------------------------------

    def monitor_nodes(self, watcher: NodeWatcher) -> Callable[[], None]:
        """Call ``watcher(node, up)`` on every nodeup/nodedown; returns an unsubscribe."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher)

    def _notify(self, node: Atom, up: bool) -> None:
        for watcher in list(self._watchers):
            try:
                watcher(node, up)
            except Exception:
                log.exception("node watcher %r failed", watcher)

    # -- routing -----------------------------------------------------------------------------

    def route(self, node: Atom, control: Any, message: Any = NO_MESSAGE) -> None:
        """Send a frame to ``node``, connecting on demand as the BEAM does."""
        connection = self.live.get(node)
        if connection is not None:
            connection.send(control, message)
            return
        if not self.open:
            return
        self._queued.setdefault(node, []).append((control, message))
        self.ensure(node)

    def ensure(self, node: Atom) -> asyncio.Future[Connection]:
        """The connection to ``node``: the live one, or one being made (dialled if none)."""
        connection = self.live.get(node)
        loop = asyncio.get_running_loop()
        if connection is not None:
            future: asyncio.Future[Connection] = loop.create_future()
            future.set_result(connection)
            return future
        future = self._connecting.get(node)  # type: ignore[assignment]
        if future is None:
            future = self._connecting[node] = loop.create_future()
            if self._pending.get(node.name) is None:  # else an accepted handshake brings it
                task = self._start_task(self._dial(node, future),
                                        name=f"dist-connect-{node.name}")
                self._pending[node.name] = task
                self._dials.add(task)
                task.add_done_callback(self._dials.discard)
        return future

    def _owns_pending(self, name: str) -> bool:
        """Whether the running task owns the pending connection to ``name``."""
        return self._pending.get(name) is asyncio.current_task()

    async def connect(self, node: Atom, *, check: bool) -> bool:
        """Node.connect: True once connected; False (logged), or with ``check`` raise, if not."""
        try:
            await self.ensure(node)
        except (OSError, handshake.HandshakeError, epmd_client.EpmdError, TimeoutError) as exc:
            if check:
                raise
            # As net_kernel:connect_node/1: False says it; a peer that left is no warning.
            log.info("could not connect to %s: %s", node.name, exc)
            return False
        return True

    # -- dialling and accepting --------------------------------------------------------------

    async def _dial(self, node: Atom, future: asyncio.Future[Connection]) -> None:
        me = self._settings
        try:
            async with asyncio.timeout(me.connect_timeout):
                alive, host = split_node_name(node.name)
                epmd_port = me.epmd_port or epmd_client.default_epmd_port()
                ip = await _resolve(host, me.ipv6)
                address = await epmd_client.port_please(alive, ip, epmd_port=epmd_port)
                if address is None:
                    raise epmd_client.NotRegistered(
                        f"{node.name} is not registered with epmd at {host}:{epmd_port}",
                        alive, host, epmd_port)
                if not self._owns_pending(node.name):
                    return  # superseded: the peer's own attempt was accepted meanwhile
                # From here on a superseded dial is not cancelled (net_kernel kills it): the
                # peer refuses it (nok, or alive answered false), where a socket closed
                # mid-handshake would show in the peer's log as a failed handshake.
                reader, writer = await asyncio.open_connection(ip, address.port)
                beneath = writer.transport if me.tls is not None else None
                left = await self._secure(writer, node.name, host)
                try:
                    peer = await handshake.connect(
                        reader, writer, our_name=me.name.name, cookie=me.cookie,
                        creation=self._creation, flags=me.flags, peer_name=node.name,
                        timeout=left, on_alive=self._owns_pending,
                        header_size=_header_size(me))
                except handshake.HandshakeRejected as exc:
                    if exc.status == "nok" and self._owns_pending(node.name):
                        # Both sides dialled and the peer keeps its own attempt: its
                        # handshake, which we accept, completes the connect (or the timeout
                        # ends it).
                        await asyncio.shield(future)
                        return
                    raise
            if self._owns_pending(node.name):
                self._connection_up(peer, await take_over(reader, writer, beneath))
            else:  # superseded meanwhile, and the peer let it through: not ours to keep
                writer.close()
        except BaseException as exc:
            if self._owns_pending(node.name):
                self._abandon(node.name, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    def _abandon(self, name: str, exc: BaseException) -> None:
        """The pending connection to ``name`` failed: whoever waits for it learns so."""
        del self._pending[name]
        node = Atom.existing(name)
        future = self._connecting.pop(node, None) if node is not None else None
        if node is not None and future is not None and not future.done():
            future.set_exception(exc if isinstance(exc, Exception) else
                                 ConnectionError(f"connect to {name} cancelled"))
            future.exception()  # a failed connect need not be awaited by anyone
            self._unreachable(node, self._queued.pop(node, []))

    async def _on_accept(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        me = self._settings
        if self._handshaking >= me.max_handshakes:
            # Connections that have not shown the cookie yet are capped, so that idle or
            # garbage ones cannot take every file descriptor from the nodes that have.
            writer.close()
            self._refusals.log("refused a connection: %d handshakes are in progress (at most "
                               "%d)", self._handshaking, me.max_handshakes)
            return
        self._handshaking += 1
        claimed: list[str] = []  # the name whose pending connection this handshake took

        def status_for(peer_name: str, peer_flags: int) -> str:
            status = self._status_for(peer_name)
            if status in ("ok", "ok_simultaneous", "alive"):
                claimed.append(peer_name)
            return status

        beneath = writer.transport if me.tls is not None else None
        try:
            left = await self._secure(writer)
            peer = await handshake.accept(
                reader, writer, our_name=me.name.name, cookie=me.cookie,
                creation=self._creation, flags=me.flags, on_name=status_for,
                timeout=left, header_size=_header_size(me))
            handover = await take_over(reader, writer, beneath)
        except BaseException as exc:
            if claimed and self._owns_pending(claimed[0]):
                self._abandon(claimed[0], exc)
            if isinstance(exc, asyncio.CancelledError):
                return  # superseded, or the loop's shutdown: end quietly
            if isinstance(exc, ConnectionError):
                log.info("a node left right after its handshake")
            elif not isinstance(exc, handshake.HandshakeError):  # logged, with the peer
                log.exception("unexpected error in an incoming handshake")
            return
        finally:
            self._handshaking -= 1
        self._connection_up(peer, handover)

    async def _secure(self, writer: asyncio.StreamWriter, peer_name: str | None = None,
                      peer_host: str = "") -> float:
        """With TLS, run the TLS handshake on the connection ``writer`` dialled to
        ``peer_name`` at ``peer_host`` (None: one we accepted). Returns the seconds left of
        ``handshake_timeout`` for the distribution handshake, which TLS shares. A TLS failure
        closes the connection and raises :class:`~pybroadway.erldist.handshake.TlsRefused`,
        logged."""
        me = self._settings
        if me.tls is None:
            return me.handshake_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + me.handshake_timeout
        if peer_name is None:
            context, server_name, who = me.tls.server, None, f"from {peername(writer)}"
        else:
            # As OTP: the host part of the node name is the SNI sent and the name checked.
            context, who = me.tls.client, f"to {peer_name}"
            server_name = peer_host if me.tls.server_name is None else me.tls.server_name
        try:
            async with asyncio.timeout_at(deadline):
                # Accepted: nothing has been read yet (this runs before the first read), so
                # the peer's first TLS bytes reach TLS, not the plain stream.
                await writer.start_tls(context, server_hostname=server_name or None,
                                       ssl_handshake_timeout=me.handshake_timeout)
        except (OSError, EOFError, TimeoutError) as exc:
            writer.transport.abort()
            why = (f"it did not finish within {me.handshake_timeout}s"
                   + (" (does the peer use TLS distribution?)" if peer_name else "")
                   if isinstance(exc, TimeoutError) else tls_failures.describe(exc))
            if peer_name is None:
                self._refusals.log("refused a TLS connection %s: %s", who, why)
            else:
                log.warning("TLS handshake %s failed: %s", who, why)
            raise handshake.TlsRefused(f"TLS handshake {who} failed: {why}",
                                       peer=peer_name) from None
        return max(deadline - loop.time(), 0.0)

    def _status_for(self, peer_name: str) -> str:
        """The status an incoming handshake from ``peer_name`` gets (net_kernel's
        ``accept_pending``); with ``ok``, ``ok_simultaneous`` or ``alive`` it owns the pending
        connection."""
        if not self.open:
            return "not_allowed"
        # The cookie is not checked yet: the name is not made an atom (a node we know has its
        # atom already, and only such a node can be live).
        peer = Atom.existing(peer_name)
        owner = self._pending.get(peer_name)
        if peer is not None and peer in self.live:
            # It dropped the connection we hold (we will see it go): this handshake owns the
            # pending connection, or a send after the old one went would dial a second one.
            status = "alive"
        elif owner is not None:
            if self._settings.name.name > peer_name:
                return "nok"  # simultaneous connect: the greater name keeps its own attempt
            status = "ok_simultaneous"  # the smaller one drops its own for this one
        else:
            status = "ok"
        if owner is not None and owner not in self._dials:
            owner.cancel()  # an older handshake of the peer's (a dial of ours ends by itself)
        task = asyncio.current_task()
        assert task is not None
        self._pending[peer_name] = task
        return status

    # -- up and down -------------------------------------------------------------------------

    def _connection_up(self, peer: handshake.PeerInfo, handover: Handover) -> None:
        me = self._settings
        node = Atom(peer.name)
        old = self.live.get(node)
        if old is not None:  # the peer's new connection (it answered true to alive)
            old.close("replaced by a new connection from the same node")
        connection = Connection(
            node, peer.flags & me.flags, handover, encoder=self._encoder,
            handlers=self._handlers, runs=self._runs, on_closed=self._connection_down,
            ticktime=me.ticktime,
            max_frame_size=me.max_frame_size, max_inflated=me.max_inflated,
            max_pending_output=me.max_pending_output, on_backlog=self._backlog)
        self.live[node] = connection
        if self._owns_pending(peer.name):
            del self._pending[peer.name]
        future = self._connecting.pop(node, None)
        if future is not None and not future.done():
            future.set_result(connection)
        for control, message in self._queued.pop(node, []):
            connection.send(control, message)
        log.info("node %s connected%s", node.name, " (hidden)" if peer.hidden else "")
        self._notify(node, True)

    def _backlog(self, connection: Connection) -> None:
        """Bytes wait for a peer: past ``max_total_pending_output`` for all peers together,
        the connection holding the most is closed. A BEAM bounds each connection only, by
        suspending the processes that send to a busy one; ours never wait, so the node's
        share is bounded here too, and the peer that reads least is the one dropped."""
        limit = self._settings.max_total_pending_output
        total = sum(live.write_buffer_size for live in self.live.values())
        if total <= limit:
            return
        fullest = max(self.live.values(), key=_write_buffer_size)
        held = fullest.write_buffer_size
        log.error("node %s reads too little: it leaves %d bytes unread, of %d that all peers "
                  "do (max_total_pending_output=%d); closing its connection",
                  fullest.peer.name, held, total, limit)
        fullest.close(f"{held} bytes unread by the peer, {total} by all peers", discard=True)

    def _connection_down(self, connection: Connection, reason: str) -> None:
        node = connection.peer
        if self.live.get(node) is not connection:
            return
        del self.live[node]
        log.info("node %s disconnected: %s", node.name, reason)
        self._lost(node)
        self._notify(node, False)


def _header_size(settings: DistSettings) -> int:
    """The length header of a handshake message: 4 bytes inside TLS ({packet, 4} in OTP)."""
    return 2 if settings.tls is None else 4


def _write_buffer_size(connection: Connection) -> int:
    return connection.write_buffer_size
