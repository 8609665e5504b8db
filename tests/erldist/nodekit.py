"""Helpers shared by the node-level interop tests: a Python node on the private epmd, BEAM
peers started without blocking the event loop, and event-based waits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pybroadway.erldist import GenServer, Node, Process
from pybroadway.term import Atom, decode
from testkit.peers import BeamPeer, SystemEpmd, unique_name
from testkit.tls import beam_args

WAIT = 10.0
"""Upper bound for anything a test waits for; the tests normally finish far sooner."""


@contextlib.asynccontextmanager
async def python_node(epmd_port: int, *, cookie: str = "pybroadway", name: str | None = None,
                      **options: Any) -> AsyncIterator[Node]:
    name = name or unique_name("py")
    node = Node(name if "@" in name else f"{name}@localhost", cookie=cookie, epmd_port=epmd_port,
                **options)
    async with node:
        node.expose("py", "whereis", lambda n: node.whereis(n))
        yield node


@contextlib.asynccontextmanager
async def started(peer: BeamPeer) -> AsyncIterator[BeamPeer]:
    """Wait (off the loop) until ``peer`` evaluates requests; kill it on the way out."""
    try:
        await asyncio.to_thread(peer.wait_started)
        yield peer
    finally:
        await asyncio.to_thread(peer.kill)


@contextlib.asynccontextmanager
async def tls_beam(otp: str, epmd: SystemEpmd, options: Path | None, *, ipv6: bool = False,
                   extra: tuple[str, ...] = ()) -> AsyncIterator[BeamPeer]:
    """A started erl node of release ``otp`` using TLS distribution with the option file
    ``options`` (None: plain TCP), named ``…@::1`` over IPv6 (``inet6_tls``) with ``ipv6``;
    ``extra``: more ``erl`` arguments."""
    dist = beam_args(otp, options, ipv6=ipv6) if options is not None else []
    peer = BeamPeer.erlang(otp, epmd_port=epmd.port, extra=[*extra, *dist],
                           host="::1" if ipv6 else "localhost")
    async with started(peer):
        yield peer


async def ev(peer: BeamPeer, expr: str) -> Any:
    """Evaluate ``expr`` on the peer and decode the value."""
    return decode(await asyncio.wait_for(peer.aeval(expr), 30))


def atom(node: Node) -> str:
    """The node's name as an Erlang atom literal (works in Elixir as ``:'…'`` too)."""
    return f"'{node.name.name}'"


def assert_over_tls(node: Node, peer: BeamPeer) -> None:
    """``node`` is connected to ``peer``, over TLS."""
    connection = node.connection(peer.node)
    assert connection is not None
    assert connection.tls and not connection.hidden


class NodeEvents:
    """Collects nodeup/nodedown notifications; ``await wait(node, up)`` waits for one."""

    def __init__(self, node: Node) -> None:
        self.seen: list[tuple[Atom, bool]] = []
        self._changed = asyncio.Event()
        node.monitor_nodes(self._on_event)

    def _on_event(self, peer: Atom, up: bool) -> None:
        self.seen.append((peer, up))
        self._changed.set()

    async def wait(self, peer: str | Atom, up: bool, timeout: float = WAIT) -> None:
        target = (peer if isinstance(peer, Atom) else Atom(peer), up)
        async with asyncio.timeout(timeout):
            while target not in self.seen:
                self._changed.clear()
                await self._changed.wait()


class Echo(GenServer):
    """Replies ``{echo, Request}``; ``pid`` gives its pid; casts and infos are recorded and
    ``got`` returns them; ``{later, X}`` replies X from outside handle_call."""

    def __init__(self) -> None:
        super().__init__()
        self.casts: list[Any] = []
        self.infos: list[Any] = []
        self.cast_event = asyncio.Event()

    def handle_call(self, request: Any, from_: Any) -> Any:
        if request == Atom("pid"):
            return self.pid
        if request == Atom("got"):
            return self.infos
        if type(request) is tuple and request[0] == Atom("later"):
            from pybroadway.erldist import NOREPLY
            self.reply(from_, request[1])
            return NOREPLY
        return (Atom("echo"), request)

    def handle_cast(self, request: Any) -> None:
        self.casts.append(request)
        self.cast_event.set()

    def handle_info(self, message: Any) -> None:
        self.infos.append(message)


class Mailbox(Process):
    """A process that just keeps its mailbox; tests take from it with ``receive``."""

    def __init__(self, *, trap_exit: bool = False) -> None:
        super().__init__()
        self.trap_exit = trap_exit
        self._stop = asyncio.Event()

    async def run(self) -> None:
        await self._stop.wait()
