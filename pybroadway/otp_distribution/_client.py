"""A Python client of the off_broadway_otp_distribution protocol (what the Elixir one does)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pybroadway._aio import maybe_await
from pybroadway.erldist import Node, Process
from pybroadway.errors import PyBroadwayError
from pybroadway.term import Atom, Pid, Reference, loggable
from pybroadway.term.atoms import DOWN, GEN_CALL, GEN_CAST, OK

from . import _global
from ._receiver import (
    DEFAULT_NAME,
    PULL_MESSAGE,
    PUSH_MESSAGE,
    REGISTER,
    REQUEST_MESSAGE,
    RESPOND,
    SEND_MESSAGE,
)

logger = logging.getLogger("pybroadway.otp_distribution")

OnRequest = Callable[[], Any | Awaitable[Any]]


class ConnectError(PyBroadwayError, ConnectionError):
    """The receiver could not be found or did not accept the registration."""


class Client(Process):
    """Finds the receiver (``:global.sync`` + ``whereis_name``, ``retries`` x ``retry_interval``
    seconds, or the ``receiver`` given as a pid or ``(name, node)``), registers with
    ``GenServer.call(receiver, :register)`` and monitors it. :meth:`push_message` casts
    ``{:push_message, data}``; a pull request is answered with ``on_request()`` in its
    version's words: ``:request_message`` with ``{:respond_to_pull_request, data}``,
    ``:pull_message`` (the library's last version) with ``{:send_message, data}``
    (``on_request`` may be a coroutine function; without one, requests are logged and
    ignored).

    When the receiver goes down, or its whole node (a server restarted), the client comes
    back by itself: it dials ``server`` again, looks the receiver up and registers again,
    waiting ``backoff`` seconds before the first attempt and doubling up to ``max_backoff``
    between the next ones, for as long as it runs. ``server`` is the node the receiver runs
    on; it defaults to the node of a ``(name, node)`` receiver, else to the node where
    ``:global`` last found the receiver. The node's own EPMD registration is renewed by its
    kernel when an EPMD answers again.

    ``node.spawn(client)``, then ``await client.connected()``.
    """

    def __init__(self, *, receiver: Pid | tuple[str, str] | None = None,
                 server: str | None = None, name: str = DEFAULT_NAME,
                 on_request: OnRequest | None = None, retries: int = 10,
                 retry_interval: float = 0.5, call_timeout: float = 5.0,
                 backoff: float = 0.2, max_backoff: float = 2.0) -> None:
        super().__init__()
        self.target = receiver
        self.receiver_name = Atom(name)
        self.on_request = on_request
        self.retries = retries
        self.retry_interval = retry_interval
        self.call_timeout = call_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.receiver: Pid | tuple[Atom, Atom] | None = None
        self._given_server = server is not None
        home = server if server is not None else (
            None if receiver is None else receiver.node if isinstance(receiver, Pid)
            else receiver[1])
        self.server: Atom | None = home if home is None or isinstance(home, Atom) \
            else Atom(home)
        self._monitor: Reference | None = None
        self._connected: asyncio.Event = asyncio.Event()

    @classmethod
    async def start(cls, node: Node, **options: Any) -> Client:
        """Spawn a client on ``node`` and wait until it is registered (raises
        :class:`ConnectError` if the first attempt fails)."""
        client = cls(**options)
        node.spawn(client)
        await client.connected()
        return client

    async def connected(self, timeout: float | None = None) -> None:
        """Wait until the client is registered with a receiver."""
        waiter = asyncio.ensure_future(self._connected.wait())
        done = asyncio.ensure_future(self.wait())
        try:
            await asyncio.wait({waiter, done}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            done.cancel()
        if not self._connected.is_set():
            if self.exit_reason is not None:
                raise ConnectError(f"the client stopped: {loggable(self.exit_reason)}")
            raise TimeoutError("the client did not connect in time")

    @property
    def is_connected(self) -> bool:
        """Whether the client is registered with a live receiver."""
        return self._connected.is_set()

    def push_message(self, data: Any) -> None:
        """``GenServer.cast(receiver, {:push_message, data})``; raises if not connected."""
        receiver = self.receiver
        if receiver is None or not self._connected.is_set():
            raise ConnectError("not connected to a receiver")
        self.node.send(receiver, (GEN_CAST, (PUSH_MESSAGE, data)), sender=self.pid)

    # -- the process ---------------------------------------------------------------------------

    async def run(self) -> None:
        await self._connect()
        while True:
            message = await self.receive()
            if type(message) is tuple and len(message) == 2 and message[0] is GEN_CAST:
                request = message[1]
                if request is REQUEST_MESSAGE:
                    await self._answer(RESPOND)
                elif request is PULL_MESSAGE:  # the library's last version
                    await self._answer(SEND_MESSAGE)
                else:
                    logger.warning("client: unknown cast %s", loggable(request))
            elif type(message) is tuple and len(message) == 5 and message[0] is DOWN \
                    and message[1] == self._monitor:
                self._connected.clear()
                logger.warning("client: receiver %s down (%s); reconnecting",
                               loggable(message[3]), loggable(message[4]))
                await self._reconnect()
            else:
                logger.debug("client: ignored %s", loggable(message))

    async def _reconnect(self) -> None:
        """Try again and again, ``backoff`` seconds first, doubling up to ``max_backoff``."""
        delay = self.backoff
        attempts = 0
        while True:
            await asyncio.sleep(delay)
            attempts += 1
            try:
                await self._connect()
            except ConnectError as exc:
                delay = min(delay * 2, self.max_backoff)
                # the first failure says why; the next ones (every max_backoff) only in debug
                logger.log(logging.WARNING if attempts == 1 else logging.DEBUG,
                           "client: %s; next attempt in %gs", exc, delay)
            else:
                logger.info("client: back after %d attempt%s", attempts,
                            "" if attempts == 1 else "s")
                return

    async def _answer(self, kind: Atom) -> None:
        """Answer a pull request in the request's version: ``{respond_to_pull_request, Data}``
        to ``:request_message``, ``{send_message, Data}`` to ``:pull_message``."""
        if self.on_request is None:
            logger.info("client: pull request ignored (no on_request callback)")
            return
        data = await maybe_await(self.on_request())
        if self.receiver is not None:
            self.node.send(self.receiver, (GEN_CAST, (kind, data)), sender=self.pid)

    async def _find(self) -> Pid | tuple[Atom, Atom]:
        if self.target is not None:
            if isinstance(self.target, Pid):
                return self.target
            return (Atom(self.target[0]) if isinstance(self.target[0], str) else self.target[0],
                    Atom(self.target[1]) if isinstance(self.target[1], str) else self.target[1])
        for attempt in range(self.retries):
            await _global.sync(self.node)
            pid = await _global.whereis_name(self.node, self.receiver_name)
            if pid is not None:
                return pid
            if attempt + 1 < self.retries:
                await asyncio.sleep(self.retry_interval)
        raise ConnectError(f"Couldn't connect to {self.receiver_name.name}")

    async def _connect(self) -> None:
        server = self.server
        if server is not None and server is not self.node.name \
                and not await self.node.connect(server):
            raise ConnectError(f"cannot reach the node {server.name}")
        receiver = await self._find()
        monitor = self.monitor(receiver)
        ref = self.node.make_ref()
        self.send(receiver, (GEN_CALL, (self.pid, ref), REGISTER))

        def reply_or_down(message: Any) -> bool:
            return type(message) is tuple and (
                (len(message) == 2 and message[0] == ref)
                or (len(message) == 5 and message[0] is DOWN and message[1] == monitor))

        try:
            answer = await self.receive(reply_or_down, timeout=self.call_timeout)
        except TimeoutError:
            self.demonitor(monitor)
            raise ConnectError(f"{loggable(receiver)} did not answer :register") from None
        if len(answer) == 5:
            raise ConnectError(f"{loggable(receiver)} is down: {loggable(answer[4])}")
        if answer[1] is not OK:
            self.demonitor(monitor)
            raise ConnectError(f"{loggable(receiver)} answered {loggable(answer[1])}")
        self.receiver = receiver
        self._monitor = monitor
        if not self._given_server and isinstance(receiver, Pid) \
                and receiver.node is not self.node.name:
            self.server = receiver.node  # where to look again if the receiver's node goes
        self._connected.set()
        logger.info("client: registered with %s", loggable(receiver))
