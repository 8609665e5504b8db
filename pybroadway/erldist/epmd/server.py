"""The embedded EPMD: an in-process EPMD server, and :func:`ensure_epmd` to start one if needed."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pybroadway._throttle import Throttle
from pybroadway.erldist.epmd.client import EpmdUnreachable, accepts_connections
from pybroadway.erldist.epmd.protocol import (
    ALIVE2_REQ,
    ALIVE2_RESP,
    ALIVE2_RESULT,
    ALIVE2_X_RESP,
    ALIVE2_X_RESULT,
    DUMP_REQ,
    KILL_REQ,
    NAMES_HEADER,
    NAMES_REQ,
    PORT2_RESP,
    PORT_PLEASE2_REQ,
    REQUEST_LENGTH,
    STOP_REQ,
    NodeAddress,
    default_epmd_port,
    loopback,
    names_line,
    pack_node,
    unpack_node,
)
from pybroadway.errors import StateError

__all__ = ["EmbeddedEpmd", "ensure_epmd"]

log = logging.getLogger(__name__)

#: The longest request read: a 255-character UTF-8 name and its record fit many times over.
#: Longer requests are refused unread (epmd resets such connections too).
MAX_REQUEST = 4096
#: The longest node name, in characters: a node name becomes an atom.
MAX_NAME_LENGTH = 255
#: Names whose last creation is remembered (so that a re-registration gets a new one); the
#: oldest is forgotten first, as epmd recycles its list of unregistered names.
REMEMBERED_NAMES = 1000


@dataclass
class _Registration:
    address: NodeAddress
    creation: int
    writer: asyncio.StreamWriter = field(repr=False)


class EmbeddedEpmd:
    """An in-process EPMD server (ALIVE2, PORT_PLEASE2, NAMES, DUMP, KILL, STOP).

    Usage::

        async with EmbeddedEpmd() as epmd:          # or: epmd = EmbeddedEpmd(); await epmd.start()
            print(epmd.port)

    Each registration gets a random non-zero 32-bit creation, different from the last one
    given to that name. A registration ends when its connection closes. Malformed requests are
    logged and their connection closed; they never stop the server.

    It obeys only what Erlang's epmd obeys: ``epmd -kill`` (KILL_REQ) stops it only when no
    node is registered, and ``epmd -stop NAME`` (STOP_REQ) is ignored, unless it was started
    with ``relaxed_command_check`` (then KILL always stops it and STOP drops that
    registration); both are taken from local addresses only, registrations too. Names over 255
    characters and requests over :data:`MAX_REQUEST` bytes are refused. At most
    ``max_connections`` connections are open at once (registrations included; each costs a file
    descriptor), of which at most ``max_registrations`` registrations, so that look-ups still
    get through when registrations pile up.
    """

    def __init__(self, *, request_timeout: float = 10.0, relaxed_command_check: bool = False,
                 max_connections: int = 1000, max_registrations: int = 500) -> None:
        self.host: str = "127.0.0.1"
        self.hosts: tuple[str, ...] = (self.host,)
        self.port: int = 0
        self.request_timeout = request_timeout
        self.relaxed_command_check = relaxed_command_check
        self.max_connections = max_connections
        self.max_registrations = max_registrations
        self._servers: list[asyncio.Server] = []
        self._nodes: dict[str, _Registration] = {}
        self._last_creation: OrderedDict[str, int] = OrderedDict()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopped: asyncio.Event | None = None
        self._refusals = Throttle(log, logging.WARNING, "refused connections", burst=1)
        # Anything that reaches the port can repeat a bad request at will.
        self._bad = Throttle(log, logging.WARNING, "bad epmd requests")

    @property
    def serving(self) -> bool:
        """True while the server accepts connections."""
        return bool(self._servers)

    def registered(self) -> dict[str, NodeAddress]:
        """A snapshot of the current registrations, by name."""
        return {name: node.address for name, node in self._nodes.items()}

    async def start(self, host: str | Sequence[str] = "127.0.0.1",
                    port: int | None = None) -> None:
        """Listen on ``host``:``port`` (default: :func:`default_epmd_port`; 0 = any free port).
        ``host`` may be several addresses, all served on one port: ``("127.0.0.1", "::1")``
        for both loopbacks, as Erlang's epmd adds ``::1`` to its addresses where IPv6 is.

        Raises OSError if the port is taken on any of them.
        """
        if self._servers:
            raise StateError("EmbeddedEpmd already started")
        hosts = (host,) if isinstance(host, str) else tuple(host)
        p = default_epmd_port() if port is None else port
        try:
            for address in hosts:
                server = await asyncio.start_server(self._handle, address, p)
                self._servers.append(server)
                p = server.sockets[0].getsockname()[1]  # port 0: the others take the first's
        except BaseException:
            await self._stop_listening()
            raise
        self._stopped = asyncio.Event()
        self.host, self.hosts, self.port = hosts[0], hosts, p
        log.info("embedded epmd listening on %s", self._where())

    def _where(self) -> str:
        return ", ".join(_at(host, self.port) for host in self.hosts)

    async def _stop_listening(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def close(self) -> None:
        """Stop listening and drop every registration. Idempotent."""
        if not self._servers:
            return
        await self._stop_listening()
        self._nodes.clear()
        if self._stopped is not None:
            self._stopped.set()
        log.info("embedded epmd on %s stopped", self._where())

    async def wait_closed(self) -> None:
        """Wait until the server stops (by :meth:`close` or a KILL_REQ)."""
        if self._stopped is not None:
            await self._stopped.wait()

    async def __aenter__(self) -> EmbeddedEpmd:
        if not self._servers:
            await self.start(port=0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _new_creation(self, name: str) -> int:
        last = self._last_creation.get(name)
        while True:
            creation = secrets.randbits(32)
            if creation != 0 and creation != last:
                break
        self._remember_creation(name, creation)
        return creation

    def _remember_creation(self, name: str, creation: int) -> None:
        last = self._last_creation
        last[name] = creation
        last.move_to_end(name)
        while len(last) > REMEMBERED_NAMES:
            last.popitem(last=False)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.max_connections:
            self._refuse(writer)
            return
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        try:
            try:
                header = await asyncio.wait_for(reader.readexactly(REQUEST_LENGTH.size),
                                                self.request_timeout)
                (length,) = REQUEST_LENGTH.unpack(header)
                if length == 0 or length > MAX_REQUEST:
                    self._bad.log("epmd: request of %d bytes from %s (at most %d), closing",
                                  length, peer, MAX_REQUEST)
                    return
                body = await asyncio.wait_for(reader.readexactly(length), self.request_timeout)
            except (asyncio.IncompleteReadError, TimeoutError, OSError) as exc:
                log.debug("epmd: incomplete request from %s: %r", peer, exc)
                return
            tag = body[0]
            if tag in (ALIVE2_REQ, DUMP_REQ, KILL_REQ, STOP_REQ) and not _is_local(writer):
                self._bad.log("epmd: request %d from %s, which is not a local address; "
                              "ignored", tag, peer)
            elif tag == ALIVE2_REQ:
                await self._alive2(body, reader, writer, peer)
            elif tag == PORT_PLEASE2_REQ:
                self._port_please2(body, writer)
            elif tag == NAMES_REQ:
                self._names(writer, dump=False)
            elif tag == DUMP_REQ:
                self._names(writer, dump=True)
            elif tag == KILL_REQ:
                await self._kill(writer, peer)
            elif tag == STOP_REQ:
                self._stop(body, writer, peer)
            else:
                self._bad.log("epmd: unknown request %d (%d bytes) from %s, closing", tag,
                              len(body), peer)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), self.request_timeout)
        except asyncio.CancelledError:
            # Cancelled at the loop's shutdown: end quietly, since Python 3.11's streams
            # report a cancelled connection handler as an error with a traceback.
            return
        except Exception:
            log.exception("epmd: error serving %s", peer)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _alive2(self, body: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, peer: object) -> None:
        try:
            address = unpack_node(body, 1, strict=True)
        except ValueError as exc:
            self._bad.log("epmd: malformed ALIVE2_REQ from %s (%s), closing", peer, exc)
            return
        name = address.name
        x_resp = address.highest >= 6
        refusal = None
        if name in self._nodes:
            refusal = "the name is taken"
        elif len(name) > MAX_NAME_LENGTH:
            refusal = f"the name has {len(name)} characters (at most {MAX_NAME_LENGTH})"
        elif len(self._nodes) >= self.max_registrations:
            refusal = f"{self.max_registrations} nodes are registered already"
        if refusal is not None:
            self._bad.log("epmd: %s from %s tried to register, but %s",
                          name[:MAX_NAME_LENGTH], peer, refusal)
            writer.write(bytes([ALIVE2_X_RESP]) + ALIVE2_X_RESULT.pack(1, 0) if x_resp
                         else bytes([ALIVE2_RESP]) + ALIVE2_RESULT.pack(1, 0))
            return
        if x_resp:
            creation = self._new_creation(name)
            writer.write(bytes([ALIVE2_X_RESP]) + ALIVE2_X_RESULT.pack(0, creation))
        else:
            last = self._last_creation.get(name, 0)
            creation = last % 3 + 1  # old 2-bit creations: 1, 2, 3, 1, ...
            self._remember_creation(name, creation)
            writer.write(bytes([ALIVE2_RESP]) + ALIVE2_RESULT.pack(0, creation))
        node = _Registration(address, creation, writer)
        self._nodes[name] = node
        node_type = address.node_type
        log.info("epmd: registered %s at port %d (type %c, versions %d-%d), creation %d",
                 name, address.port, node_type if 32 < node_type < 127 else 63, address.lowest,
                 address.highest, creation)
        try:
            await writer.drain()
            # The registration lives until the node closes the connection; ignore its data.
            while await reader.read(4096):
                pass
        except OSError:
            pass
        finally:
            if self._nodes.get(name) is node:
                del self._nodes[name]
                log.info("epmd: unregistered %s", name)

    def _port_please2(self, body: bytes, writer: asyncio.StreamWriter) -> None:
        name = body[1:].decode("utf-8", "replace")
        if len(name) > MAX_NAME_LENGTH:
            self._bad.log("epmd: port please for a name of %d characters; closing", len(name))
            return
        node = self._nodes.get(name)
        if node is None:
            log.debug("epmd: port please %s: unknown", name)
            writer.write(bytes([PORT2_RESP, 1]))
            return
        writer.write(bytes([PORT2_RESP, 0]) + pack_node(node.address))

    def _names(self, writer: asyncio.StreamWriter, *, dump: bool) -> None:
        out = [NAMES_HEADER.pack(self.port)]
        for name, node in self._nodes.items():
            port = node.address.port
            if dump:
                out.append(f"active name     <{name}> at port {port}\n".encode())
            else:
                out.append(names_line(name, port))
        writer.write(b"".join(out))

    async def _kill(self, writer: asyncio.StreamWriter, peer: object) -> None:
        if self._nodes and not self.relaxed_command_check:
            self._bad.log("epmd: kill request from %s refused: %d nodes are registered (start "
                          "with relaxed_command_check to allow it)", peer, len(self._nodes))
            writer.write(b"NO")
            return
        writer.write(b"OK")
        log.info("epmd: kill request from %s, stopping", peer)
        with contextlib.suppress(Exception):
            await writer.drain()
        asyncio.get_running_loop().create_task(self.close())

    def _stop(self, body: bytes, writer: asyncio.StreamWriter, peer: object) -> None:
        if not self.relaxed_command_check:
            self._bad.log("epmd: stop request from %s ignored (start with "
                          "relaxed_command_check to allow it)", peer)
            return
        name = body[1:].decode("utf-8", "replace")
        node = self._nodes.pop(name, None)
        if node is None:
            writer.write(b"NOEXIST")
            return
        log.info("epmd: stop request, unregistering %s", name)
        node.writer.close()
        writer.write(b"STOPPED")


    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """Close a connection over the cap at once (saying so at most once a second)."""
        writer.close()
        self._refusals.log("epmd: refused a connection: %d are open (at most %d)",
                           len(self._writers), self.max_connections)


def _at(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_local(writer: asyncio.StreamWriter) -> bool:
    """A peer on a loopback address or on the address it reached us at (epmd's rule)."""
    peer = writer.get_extra_info("peername")
    ours = writer.get_extra_info("sockname")
    if not (isinstance(peer, tuple) and isinstance(ours, tuple)):
        return True  # a Unix socket is local by nature
    try:
        address = ipaddress.ip_address(peer[0])
    except ValueError:
        return False
    return address.is_loopback or peer[0] == ours[0]


async def ensure_epmd(port: int | None = None, *, ipv6: bool = False) -> EmbeddedEpmd | None:
    """Make sure an EPMD answers on ``port`` (default :func:`default_epmd_port`) at 127.0.0.1,
    and with ``ipv6`` at ``::1`` too (where a node under ``inet6_tcp`` registers).

    Returns None if one already listens there; otherwise starts, and returns, an
    :class:`EmbeddedEpmd` (the caller closes it) on those loopbacks. If another process binds
    the port between our check and our bind, its EPMD is used and None is returned. Raises
    :class:`~pybroadway.erldist.epmd.client.EpmdUnreachable` if none answers and none can
    be started (the port is held by something else, or not ours to bind), or if one answers
    at 127.0.0.1 only: a second one at ``::1`` would split the host's nodes in two.
    """
    p = default_epmd_port() if port is None else port
    ours = loopback(ipv6)
    if await accepts_connections(ours, p):
        log.debug("an epmd already listens on port %d", p)
        return None
    if ipv6 and await accepts_connections(loopback(), p):
        raise EpmdUnreachable(f"an epmd answers at {_at(loopback(), p)} but not at "
                              f"{_at(ours, p)}, where an IPv6 node registers (as inet6_tcp "
                              f"does): run one that listens on both (Erlang's epmd does)",
                              ours, p)
    hosts = (loopback(), ours) if ipv6 else (ours,)
    epmd = EmbeddedEpmd()
    try:
        await epmd.start(hosts, p)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and await accepts_connections(ours, p):
            log.debug("another epmd started on port %d meanwhile; using it", p)
            return None
        where = " nor ".join(_at(host, p) for host in hosts)
        raise EpmdUnreachable(f"no epmd answers at {where}, and none can be started there: "
                              f"{exc.strerror or exc}", ours, p) from exc
    return epmd
