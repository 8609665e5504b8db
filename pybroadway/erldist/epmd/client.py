"""The asyncio EPMD client: register a node, look one up, list them, kill an EPMD.

A registration lives as long as its TCP connection: :class:`EpmdRegistration` holds it open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pybroadway.erldist.epmd.protocol import (
    ALIVE2_REQ,
    ALIVE2_RESP,
    ALIVE2_RESULT,
    ALIVE2_X_RESP,
    ALIVE2_X_RESULT,
    KILL_REQ,
    NAMES_HEADER,
    NAMES_REQ,
    NODE_TYPE_HIDDEN,
    NODE_TYPE_NORMAL,
    PORT2_RESP,
    PORT_PLEASE2_REQ,
    NodeAddress,
    default_epmd_port,
    frame,
    pack_node,
    parse_names,
    unpack_node,
)
from pybroadway.errors import ArgumentError, PyBroadwayError

__all__ = [
    "DEFAULT_TIMEOUT",
    "EpmdError",
    "EpmdRegistration",
    "EpmdUnreachable",
    "NameTaken",
    "NotAnEpmd",
    "NotRegistered",
    "accepts_connections",
    "kill",
    "names",
    "port_please",
    "register",
]

log = logging.getLogger(__name__)

#: Seconds an EPMD request may take.
DEFAULT_TIMEOUT = 5.0
REPLY_TIMEOUT = 2.0
"""An EPMD answers a registration at once: silence this long is another program's."""


class EpmdError(PyBroadwayError):
    """EPMD could not be reached, refused a registration, or answered nonsense."""


class EpmdUnreachable(EpmdError):
    """No EPMD answers at ``host``:``port`` (nothing listens there, or it does not answer)."""

    def __init__(self, message: str, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class NotAnEpmd(EpmdUnreachable):
    """What listens at ``host``:``port`` does not answer as an EPMD (another program holds
    the port)."""

    def __init__(self, host: str, port: int, why: str) -> None:
        super().__init__(f"what listens at {host}:{port} is not an EPMD ({why})", host, port)


class NotRegistered(EpmdError):
    """EPMD at ``host``:``port`` knows no node named ``name`` (it is not running, or uses
    another EPMD)."""

    def __init__(self, message: str, name: str, host: str, port: int) -> None:
        super().__init__(message)
        self.name = name
        self.host = host
        self.port = port


class NameTaken(EpmdError):
    """EPMD at ``host``:``port`` refused to register ``name``: another node has it."""

    def __init__(self, message: str, name: str, host: str, port: int) -> None:
        super().__init__(message)
        self.name = name
        self.host = host
        self.port = port


def _short_name(name: str) -> str:
    """EPMD knows nodes by the part before '@'."""
    return name.split("@", 1)[0]


async def _open(host: str, port: int, timeout: float
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        raise EpmdUnreachable(f"epmd at {host}:{port} did not answer within {timeout}s",
                              host, port) from None
    except OSError as exc:
        raise EpmdUnreachable(f"cannot reach epmd at {host}:{port}: {exc.strerror or exc}",
                              host, port) from exc


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def _one_shot(host: str, port: int, body: bytes, timeout: float) -> bytes:
    """Send one request, return everything epmd sends until it closes the socket."""
    reader, writer = await _open(host, port, timeout)
    try:
        writer.write(frame(body))
        await asyncio.wait_for(writer.drain(), timeout)
        return await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        raise EpmdError(f"epmd at {host}:{port} did not reply within {timeout}s") from None
    except OSError as exc:
        raise EpmdError(f"epmd at {host}:{port}: {exc}") from exc
    finally:
        await _close_writer(writer)


async def accepts_connections(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if something (an EPMD, presumably) accepts TCP connections on ``host``:``port``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    await _close_writer(writer)
    return True


class EpmdRegistration:
    """A node name registered with EPMD; the registration lasts while this object is open.

    Attributes: ``name`` (short name), ``port`` (the node's listen port), ``creation``
    (assigned by EPMD), ``hidden``, ``epmd_host``, ``epmd_port``.
    """

    def __init__(self, *, node: NodeAddress, creation: int, epmd_host: str, epmd_port: int,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._node = node
        self.name = node.name
        self.port = node.port
        self.hidden = node.hidden
        self.creation = creation
        self.epmd_host = epmd_host
        self.epmd_port = epmd_port
        self._closing = False
        self._lost = asyncio.Event()
        self._use(reader, writer)

    def _use(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lost.clear()
        self._watch = asyncio.get_running_loop().create_task(
            self._watch_socket(reader), name=f"epmd-registration-{self.name}")

    async def _watch_socket(self, reader: asyncio.StreamReader) -> None:
        try:
            while await reader.read(4096):
                pass
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._lost.set()
            if not self._closing:
                log.warning("epmd at %s:%d closed the registration of %s",
                            self.epmd_host, self.epmd_port, self.name)

    async def renew(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Register again, with the same name and port, after the registration was lost (its
        EPMD stopped or restarted). Raises :class:`EpmdError` as :func:`register` does; then
        the registration stays lost and may be renewed later."""
        if self._closing or not self.closed:
            return
        reader, writer, self.creation = await _alive2(self._node, self.epmd_host,
                                                      self.epmd_port, timeout)
        if self._closing:  # closed while we were registering again
            await _close_writer(writer)
            return
        self._use(reader, writer)

    @property
    def closed(self) -> bool:
        """True once the registration ended (closed by us or lost because epmd went away)."""
        return self._lost.is_set()

    @property
    def unregistered(self) -> bool:
        """True once :meth:`close` was called: the registration ended on purpose."""
        return self._closing

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
        raise ArgumentError(f"invalid node name {name!r}")
    if not 0 < port < 65536:
        raise ArgumentError(f"invalid port {port}")
    eport = epmd_port if epmd_port is not None else default_epmd_port()
    node = NodeAddress(short, port, NODE_TYPE_HIDDEN if hidden else NODE_TYPE_NORMAL,
                       extra=extra)
    reader, writer, creation = await _alive2(node, epmd_host, eport, timeout)
    return EpmdRegistration(node=node, creation=creation, epmd_host=epmd_host, epmd_port=eport,
                            reader=reader, writer=writer)


async def _first_byte(reader: asyncio.StreamReader, host: str, port: int, wait: float) -> int:
    """The first byte of a registration's reply; NotAnEpmd if none comes."""
    try:
        first = await asyncio.wait_for(reader.read(1), wait)
    except TimeoutError:
        raise NotAnEpmd(host, port, f"it did not answer the registration within {wait:g}s"
                        ) from None
    if not first:
        raise NotAnEpmd(host, port, "it closed the connection at the registration")
    return first[0]


async def _alive2(node: NodeAddress, epmd_host: str, eport: int, timeout: float
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """ALIVE2_REQ for ``node``: the registration's open connection and its creation."""
    short = node.name
    reader, writer = await _open(epmd_host, eport, timeout)
    try:
        writer.write(frame(bytes([ALIVE2_REQ]) + pack_node(node)))
        await asyncio.wait_for(writer.drain(), timeout)
        tag = await _first_byte(reader, epmd_host, eport, min(timeout, REPLY_TIMEOUT))
        if tag == ALIVE2_X_RESP:
            reply = ALIVE2_X_RESULT
        elif tag == ALIVE2_RESP:
            reply = ALIVE2_RESULT
        else:
            raise NotAnEpmd(epmd_host, eport, f"it answered the registration with byte {tag}")
        result, creation = reply.unpack(
            await asyncio.wait_for(reader.readexactly(reply.size), timeout))
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
        raise NameTaken(f"the name {short} seems to be in use by another Erlang node "
                        f"(epmd at {epmd_host}:{eport} answered result {result})", short, epmd_host,
                        eport)
    log.info("registered %s (port %d, %s) with epmd at %s:%d, creation %d", short, node.port,
             "hidden" if node.hidden else "visible", epmd_host, eport, creation)
    return reader, writer, creation


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
    if len(data) < 2 or data[0] != PORT2_RESP:
        raise EpmdError(f"unexpected PORT_PLEASE2 reply for {short}: {data[:16]!r}")
    if data[1] != 0:
        return None
    try:
        return unpack_node(data, 2, strict=False)
    except ValueError:
        raise EpmdError(f"truncated PORT_PLEASE2 reply for {short}: {data!r}") from None


async def names(host: str = "127.0.0.1", epmd_port: int | None = None, *,
                timeout: float = DEFAULT_TIMEOUT) -> list[tuple[str, int]]:
    """List ``(name, port)`` of the nodes registered with the epmd on ``host`` (NAMES_REQ)."""
    eport = epmd_port if epmd_port is not None else default_epmd_port()
    data = await _one_shot(host, eport, bytes([NAMES_REQ]), timeout)
    if len(data) < NAMES_HEADER.size:
        raise EpmdError(f"epmd at {host}:{eport} sent a short NAMES reply: {data!r}")
    return parse_names(data[NAMES_HEADER.size:])


async def kill(host: str = "127.0.0.1", epmd_port: int | None = None, *,
               timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Ask the epmd on ``host`` to stop (KILL_REQ, like ``epmd -kill``).

    True if it agreed; False if it refused, as Erlang's epmd does while nodes are registered
    unless it runs with ``-relaxed_command_check``.
    """
    eport = epmd_port if epmd_port is not None else default_epmd_port()
    reply = await _one_shot(host, eport, bytes([KILL_REQ]), timeout)
    if reply not in (b"OK", b"NO"):
        raise EpmdError(f"epmd at {host}:{eport} sent an unexpected KILL reply: {reply!r}")
    return reply == b"OK"
