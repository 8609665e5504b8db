"""EPMD: an asyncio client (register, look up, list) and an in-process EPMD server.

Protocol facts are in PROTOCOL.md §2. Every request is ``Len:16`` followed by the request
bytes; replies are unframed. A registration lives as long as its TCP connection.

Command line (``python -m pybroadway.erldist.epmd``)::

    serve [--host H] [--port P]      run the embedded EPMD in the foreground (Ctrl-C stops)
    names [--host H] [--port P]      list the nodes registered with an EPMD (ours or Erlang's)
    port-please NAME [--host H] [--port P]   look one node up
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import re
import secrets
import signal
import struct
import sys
from dataclasses import dataclass, field

from pybroadway.errors import PyBroadwayError

__all__ = [
    "DEFAULT_EPMD_PORT",
    "DEFAULT_TIMEOUT",
    "NODE_TYPE_HIDDEN",
    "NODE_TYPE_NORMAL",
    "EmbeddedEpmd",
    "EpmdError",
    "EpmdRegistration",
    "NodeAddress",
    "default_epmd_port",
    "ensure_epmd",
    "main",
    "names",
    "port_please",
    "register",
]

log = logging.getLogger("pybroadway.erldist.epmd")

DEFAULT_EPMD_PORT = 4369
DEFAULT_TIMEOUT = 5.0

NODE_TYPE_NORMAL = 77  # 'M'
NODE_TYPE_HIDDEN = 72  # 'H'

# Request / reply tags.
ALIVE2_REQ = 120  # 'x'
ALIVE2_X_RESP = 118  # 'v'
ALIVE2_RESP = 121  # 'y'
PORT_PLEASE2_REQ = 122  # 'z'
PORT2_RESP = 119  # 'w'
NAMES_REQ = 110  # 'n'
DUMP_REQ = 100  # 'd'
KILL_REQ = 107  # 'k'
STOP_REQ = 115  # 's'

# What real OTP 25..28 nodes register with (erl_epmd:epmd_dist_low/0 is 5).
DIST_HIGHEST = 6
DIST_LOWEST = 5

_MAX_REQUEST = 0xFFFF
_NAMES_LINE = re.compile(rb"^name (.+) at port (\d+)$")


class EpmdError(PyBroadwayError):
    """EPMD could not be reached, refused a registration, or answered nonsense."""


@dataclass(frozen=True)
class NodeAddress:
    """A PORT2_RESP: where a node listens and which distribution versions it speaks."""

    name: str
    port: int
    node_type: int = NODE_TYPE_NORMAL
    protocol: int = 0
    highest: int = DIST_HIGHEST
    lowest: int = DIST_LOWEST
    extra: bytes = b""

    @property
    def hidden(self) -> bool:
        """True if the node registered as hidden ('H')."""
        return self.node_type == NODE_TYPE_HIDDEN


def default_epmd_port() -> int:
    """The EPMD port: ``$ERL_EPMD_PORT`` if set (and valid), else 4369."""
    value = os.environ.get("ERL_EPMD_PORT", "").strip()
    if value:
        try:
            port = int(value)
        except ValueError:
            log.warning("ignoring invalid ERL_EPMD_PORT=%r", value)
        else:
            if 0 < port < 65536:
                return port
            log.warning("ignoring out-of-range ERL_EPMD_PORT=%r", value)
    return DEFAULT_EPMD_PORT


def _short_name(name: str) -> str:
    """EPMD knows nodes by the part before '@'."""
    return name.split("@", 1)[0]


async def _open(host: str, port: int, timeout: float
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        raise EpmdError(f"epmd at {host}:{port} did not answer within {timeout}s") from None
    except OSError as exc:
        raise EpmdError(f"cannot reach epmd at {host}:{port}: {exc.strerror or exc}") from exc


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


def _request(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


async def _one_shot(host: str, port: int, body: bytes, timeout: float) -> bytes:
    """Send one request, return everything epmd sends until it closes the socket."""
    reader, writer = await _open(host, port, timeout)
    try:
        writer.write(_request(body))
        await asyncio.wait_for(writer.drain(), timeout)
        return await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        raise EpmdError(f"epmd at {host}:{port} did not reply within {timeout}s") from None
    except OSError as exc:
        raise EpmdError(f"epmd at {host}:{port}: {exc}") from exc
    finally:
        await _close_writer(writer)


# --------------------------------------------------------------------------------------------
# Client


class EpmdRegistration:
    """A node name registered with EPMD; the registration lasts while this object is open.

    Attributes: ``name`` (short name), ``port`` (the node's listen port), ``creation``
    (assigned by EPMD), ``hidden``, ``epmd_host``, ``epmd_port``.
    """

    def __init__(self, *, name: str, port: int, creation: int, hidden: bool, epmd_host: str,
                 epmd_port: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.name = name
        self.port = port
        self.creation = creation
        self.hidden = hidden
        self.epmd_host = epmd_host
        self.epmd_port = epmd_port
        self._reader = reader
        self._writer = writer
        self._closing = False
        self._lost = asyncio.Event()
        self._watch = asyncio.get_running_loop().create_task(
            self._watch_socket(), name=f"epmd-registration-{name}")

    async def _watch_socket(self) -> None:
        try:
            while await self._reader.read(4096):
                pass
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._lost.set()
            if not self._closing:
                log.warning("epmd at %s:%d closed the registration of %s",
                            self.epmd_host, self.epmd_port, self.name)

    @property
    def closed(self) -> bool:
        """True once the registration ended (closed by us or lost because epmd went away)."""
        return self._lost.is_set()

    async def wait_lost(self) -> None:
        """Wait until the registration ends (e.g. epmd was killed)."""
        await self._lost.wait()

    async def close(self) -> None:
        """Unregister (by closing the connection). Idempotent."""
        if self._closing:
            return
        self._closing = True
        log.info("unregistering %s from epmd at %s:%d", self.name, self.epmd_host,
                 self.epmd_port)
        await _close_writer(self._writer)
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        self._lost.set()

    async def __aenter__(self) -> EpmdRegistration:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (f"EpmdRegistration(name={self.name!r}, port={self.port}, "
                f"creation={self.creation}, closed={self.closed})")


async def register(name: str, port: int, *, hidden: bool = False, epmd_host: str = "127.0.0.1",
                   epmd_port: int | None = None, extra: bytes = b"",
                   timeout: float = DEFAULT_TIMEOUT) -> EpmdRegistration:
    """Register node ``name`` (short name; an ``@host`` suffix is dropped) listening on ``port``.

    Sends ALIVE2_REQ (HighestVersion 6, LowestVersion 5, like real nodes) and keeps the socket
    open; ``await registration.close()`` unregisters. Raises :class:`EpmdError` if the name is
    taken or epmd is unreachable / silent for ``timeout`` seconds.
    """
    short = _short_name(name)
    raw_name = short.encode("utf-8")
    if not raw_name or len(raw_name) > 255:
        raise ValueError(f"invalid node name {name!r}")
    if not 0 < port < 65536:
        raise ValueError(f"invalid port {port}")
    eport = epmd_port if epmd_port is not None else default_epmd_port()
    body = (struct.pack(">BHBBHHH", ALIVE2_REQ, port,
                        NODE_TYPE_HIDDEN if hidden else NODE_TYPE_NORMAL, 0,
                        DIST_HIGHEST, DIST_LOWEST, len(raw_name))
            + raw_name + struct.pack(">H", len(extra)) + extra)
    reader, writer = await _open(epmd_host, eport, timeout)
    try:
        writer.write(_request(body))
        await asyncio.wait_for(writer.drain(), timeout)
        tag = (await asyncio.wait_for(reader.readexactly(1), timeout))[0]
        if tag == ALIVE2_X_RESP:
            result, creation = struct.unpack(
                ">BI", await asyncio.wait_for(reader.readexactly(5), timeout))
        elif tag == ALIVE2_RESP:
            result, creation = struct.unpack(
                ">BH", await asyncio.wait_for(reader.readexactly(3), timeout))
        else:
            raise EpmdError(f"epmd at {epmd_host}:{eport} sent an unexpected reply "
                            f"(tag {tag}) to the registration of {short}")
    except TimeoutError:
        await _close_writer(writer)
        raise EpmdError(f"epmd at {epmd_host}:{eport} did not answer the registration of "
                        f"{short} within {timeout}s") from None
    except (asyncio.IncompleteReadError, OSError) as exc:
        await _close_writer(writer)
        raise EpmdError(f"epmd at {epmd_host}:{eport} closed the connection while "
                        f"registering {short}: {exc}") from exc
    except BaseException:
        await _close_writer(writer)
        raise
    if result != 0:
        await _close_writer(writer)
        raise EpmdError(f"the name {short} seems to be in use by another Erlang node "
                        f"(epmd at {epmd_host}:{eport} answered result {result})")
    log.info("registered %s (port %d, %s) with epmd at %s:%d, creation %d", short, port,
             "hidden" if hidden else "visible", epmd_host, eport, creation)
    return EpmdRegistration(name=short, port=port, creation=creation, hidden=hidden,
                            epmd_host=epmd_host, epmd_port=eport, reader=reader, writer=writer)


def _parse_port2_resp(data: bytes, name: str) -> NodeAddress | None:
    if len(data) < 2 or data[0] != PORT2_RESP:
        raise EpmdError(f"unexpected PORT_PLEASE2 reply for {name}: {data[:16]!r}")
    if data[1] != 0:
        return None
    try:
        port, node_type, protocol, highest, lowest, nlen = struct.unpack_from(">HBBHHH", data, 2)
        off = 12
        rname = data[off:off + nlen]
        if len(rname) != nlen:
            raise EpmdError(f"truncated PORT_PLEASE2 reply for {name}")
        off += nlen
        extra = b""
        if len(data) >= off + 2:
            (elen,) = struct.unpack_from(">H", data, off)
            extra = data[off + 2:off + 2 + elen]
    except struct.error:
        raise EpmdError(f"truncated PORT_PLEASE2 reply for {name}: {data!r}") from None
    return NodeAddress(name=rname.decode("utf-8", "replace"), port=port, node_type=node_type,
                       protocol=protocol, highest=highest, lowest=lowest, extra=extra)


async def port_please(name: str, host: str = "127.0.0.1", epmd_port: int | None = None, *,
                      timeout: float = DEFAULT_TIMEOUT) -> NodeAddress | None:
    """Ask the epmd on ``host`` where node ``name`` listens; None if it is not registered.

    ``name`` may be a short name or ``name@host`` (the host part is ignored: ``host`` says
    which epmd to ask). Raises :class:`EpmdError` if epmd cannot be reached or is silent.
    """
    short = _short_name(name)
    eport = epmd_port if epmd_port is not None else default_epmd_port()
    data = await _one_shot(host, eport, bytes([PORT_PLEASE2_REQ]) + short.encode("utf-8"),
                           timeout)
    return _parse_port2_resp(data, short)


async def names(host: str = "127.0.0.1", epmd_port: int | None = None, *,
                timeout: float = DEFAULT_TIMEOUT) -> list[tuple[str, int]]:
    """List ``(name, port)`` of the nodes registered with the epmd on ``host`` (NAMES_REQ)."""
    eport = epmd_port if epmd_port is not None else default_epmd_port()
    data = await _one_shot(host, eport, bytes([NAMES_REQ]), timeout)
    if len(data) < 4:
        raise EpmdError(f"epmd at {host}:{eport} sent a short NAMES reply: {data!r}")
    result: list[tuple[str, int]] = []
    for line in data[4:].splitlines():
        m = _NAMES_LINE.match(line.strip())
        if m:
            result.append((m.group(1).decode("utf-8", "replace"), int(m.group(2))))
    return result


# --------------------------------------------------------------------------------------------
# Server


@dataclass
class _Node:
    name: str
    port: int
    node_type: int
    protocol: int
    highest: int
    lowest: int
    extra: bytes
    creation: int
    writer: asyncio.StreamWriter = field(repr=False)


class EmbeddedEpmd:
    """An in-process EPMD server (ALIVE2, PORT_PLEASE2, NAMES, DUMP, KILL, STOP).

    Usage::

        async with EmbeddedEpmd() as epmd:          # or: epmd = EmbeddedEpmd(); await epmd.start()
            print(epmd.port)

    Each registration gets a random non-zero 32-bit creation, different from the last one
    given to that name. A registration ends when its connection closes. Malformed requests are
    logged and their connection closed; they never stop the server. ``epmd -kill`` (KILL_REQ)
    stops it (always answering "OK"); ``epmd -stop NAME`` drops that registration.
    """

    def __init__(self, *, request_timeout: float = 10.0) -> None:
        self.host: str = "127.0.0.1"
        self.port: int = 0
        self.request_timeout = request_timeout
        self._server: asyncio.Server | None = None
        self._nodes: dict[str, _Node] = {}
        self._last_creation: dict[str, int] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopped: asyncio.Event | None = None

    @property
    def serving(self) -> bool:
        """True while the server accepts connections."""
        return self._server is not None

    def registered(self) -> dict[str, NodeAddress]:
        """A snapshot of the current registrations, by name."""
        return {n.name: NodeAddress(n.name, n.port, n.node_type, n.protocol, n.highest,
                                    n.lowest, n.extra) for n in self._nodes.values()}

    async def start(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        """Listen on ``host``:``port`` (default: :func:`default_epmd_port`; 0 = any free port).

        Raises OSError if the port is taken.
        """
        if self._server is not None:
            raise RuntimeError("EmbeddedEpmd already started")
        self._stopped = asyncio.Event()
        p = default_epmd_port() if port is None else port
        self._server = await asyncio.start_server(self._handle, host, p)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("embedded epmd listening on %s:%d", host, self.port)

    async def close(self) -> None:
        """Stop listening and drop every registration. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
        self._nodes.clear()
        if self._stopped is not None:
            self._stopped.set()
        log.info("embedded epmd on %s:%d stopped", self.host, self.port)

    async def wait_closed(self) -> None:
        """Wait until the server stops (by :meth:`close` or a KILL_REQ)."""
        if self._stopped is not None:
            await self._stopped.wait()

    async def __aenter__(self) -> EmbeddedEpmd:
        if self._server is None:
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
        self._last_creation[name] = creation
        return creation

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        try:
            try:
                header = await asyncio.wait_for(reader.readexactly(2), self.request_timeout)
                (length,) = struct.unpack(">H", header)
                if length == 0:
                    log.warning("epmd: empty request from %s, closing", peer)
                    return
                body = await asyncio.wait_for(reader.readexactly(length), self.request_timeout)
            except (asyncio.IncompleteReadError, TimeoutError, OSError) as exc:
                log.debug("epmd: incomplete request from %s: %r", peer, exc)
                return
            tag = body[0]
            if tag == ALIVE2_REQ:
                await self._alive2(body, reader, writer, peer)
            elif tag == PORT_PLEASE2_REQ:
                self._port_please2(body, writer)
            elif tag == NAMES_REQ:
                self._names(writer, dump=False)
            elif tag == DUMP_REQ:
                self._names(writer, dump=True)
            elif tag == KILL_REQ:
                writer.write(b"OK")
                log.info("epmd: kill request from %s, stopping", peer)
                with contextlib.suppress(Exception):
                    await writer.drain()
                asyncio.get_running_loop().create_task(self.close())
            elif tag == STOP_REQ:
                self._stop(body, writer)
            else:
                log.warning("epmd: unknown request %d (%d bytes) from %s, closing", tag,
                            len(body), peer)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), self.request_timeout)
        except asyncio.CancelledError:
            raise
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
            port, node_type, protocol, highest, lowest, nlen = struct.unpack_from(
                ">HBBHHH", body, 1)
            raw_name = body[11:11 + nlen]
            (elen,) = struct.unpack_from(">H", body, 11 + nlen)
            extra = body[13 + nlen:13 + nlen + elen]
            if len(raw_name) != nlen or nlen == 0 or len(extra) != elen:
                raise ValueError("bad lengths")
            name = raw_name.decode("utf-8")
        except (struct.error, ValueError) as exc:
            log.warning("epmd: malformed ALIVE2_REQ from %s (%s), closing", peer, exc)
            return
        x_resp = highest >= 6
        if name in self._nodes:
            log.warning("epmd: %s from %s tried to register, but the name is taken", name, peer)
            writer.write(bytes([ALIVE2_X_RESP, 1, 0, 0, 0, 0]) if x_resp
                         else bytes([ALIVE2_RESP, 1, 0, 0]))
            return
        if x_resp:
            creation = self._new_creation(name)
            writer.write(struct.pack(">BBI", ALIVE2_X_RESP, 0, creation))
        else:
            last = self._last_creation.get(name, 0)
            creation = last % 3 + 1  # old 2-bit creations: 1, 2, 3, 1, ...
            self._last_creation[name] = creation
            writer.write(struct.pack(">BBH", ALIVE2_RESP, 0, creation))
        node = _Node(name, port, node_type, protocol, highest, lowest, extra, creation, writer)
        self._nodes[name] = node
        log.info("epmd: registered %s at port %d (type %c, versions %d-%d), creation %d",
                 name, port, node_type if 32 < node_type < 127 else 63, lowest, highest,
                 creation)
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
        node = self._nodes.get(name)
        if node is None:
            log.debug("epmd: port please %s: unknown", name)
            writer.write(bytes([PORT2_RESP, 1]))
            return
        raw_name = node.name.encode("utf-8")
        writer.write(struct.pack(">BBHBBHHH", PORT2_RESP, 0, node.port, node.node_type,
                                 node.protocol, node.highest, node.lowest, len(raw_name))
                     + raw_name + struct.pack(">H", len(node.extra)) + node.extra)

    def _names(self, writer: asyncio.StreamWriter, *, dump: bool) -> None:
        out = [struct.pack(">I", self.port)]
        for node in self._nodes.values():
            if dump:
                out.append(f"active name     <{node.name}> at port {node.port}\n".encode())
            else:
                out.append(f"name {node.name} at port {node.port}\n".encode())
        writer.write(b"".join(out))

    def _stop(self, body: bytes, writer: asyncio.StreamWriter) -> None:
        name = body[1:].decode("utf-8", "replace")
        node = self._nodes.pop(name, None)
        if node is None:
            writer.write(b"NOEXIST")
            return
        log.info("epmd: stop request, unregistering %s", name)
        node.writer.close()
        writer.write(b"STOPPED")


async def _listening(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    await _close_writer(writer)
    return True


async def ensure_epmd(port: int | None = None, host: str = "127.0.0.1") -> EmbeddedEpmd | None:
    """Make sure an EPMD answers on ``port`` (default :func:`default_epmd_port`).

    Returns None if one already listens there; otherwise starts, and returns, an
    :class:`EmbeddedEpmd` (the caller closes it). If another process binds the port between
    our check and our bind, its EPMD is used and None is returned.
    """
    p = default_epmd_port() if port is None else port
    if await _listening(host, p):
        log.debug("an epmd already listens on %s:%d", host, p)
        return None
    epmd = EmbeddedEpmd()
    try:
        await epmd.start(host, p)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and await _listening(host, p):
            log.debug("another epmd started on %s:%d meanwhile; using it", host, p)
            return None
        raise
    return epmd


# --------------------------------------------------------------------------------------------
# Command line


async def _serve(host: str, port: int | None) -> None:
    epmd = EmbeddedEpmd()
    await epmd.start(host, port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Also when started in the background, where SIGINT is ignored by default.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, _stop_on_signal, epmd, sig)
    try:
        await epmd.wait_closed()
    finally:
        await epmd.close()


def _stop_on_signal(epmd: EmbeddedEpmd, sig: signal.Signals) -> None:
    log.info("%s received, stopping", sig.name)
    asyncio.get_running_loop().create_task(epmd.close())


def main(argv: list[str] | None = None) -> int:
    """``python -m pybroadway.erldist.epmd {serve,names,port-please}``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m pybroadway.erldist.epmd",
                                     description="pybroadway's EPMD server and client")
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd, text in (("serve", "run the embedded EPMD in the foreground"),
                      ("names", "list registered nodes"),
                      ("port-please", "look up one node")):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("--host", default="127.0.0.1",
                       help="address to listen on / epmd host to ask (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=None,
                       help="EPMD port (default $ERL_EPMD_PORT or 4369)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        if cmd == "port-please":
            p.add_argument("name", help="node name (short, or name@host)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_serve(args.host, args.port))
            return 0
        if args.command == "names":
            port = args.port if args.port is not None else default_epmd_port()
            listed = asyncio.run(names(args.host, port))
            print(f"epmd: up and running on port {port} with data:")
            for name, nport in listed:
                print(f"name {name} at port {nport}")
            return 0
        address = asyncio.run(port_please(args.name, args.host, args.port))
        if address is None:
            print(f"{args.name}: not registered", file=sys.stderr)
            return 1
        print(f"{address.name} port {address.port} type {chr(address.node_type)} "
              f"versions {address.lowest}-{address.highest}")
        return 0
    except (EpmdError, OSError) as exc:
        print(f"epmd: {exc}", file=sys.stderr)
        return 1
