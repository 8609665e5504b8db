"""A Python client of the off_broadway_otp_distribution protocol (what the Elixir one does)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from pybroadway._aio import maybe_await
from pybroadway._throttle import Throttle
from pybroadway.erldist import EpmdError, HandshakeError, Node, Process
from pybroadway.errors import PyBroadwayError, TimedOut
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
    """The receiver could not be found or did not accept the registration, or the client has
    stopped."""


class QueueFull(ConnectError):
    """:meth:`Client.push_message` while the client is not registered, with ``max_queue``
    messages already waiting for the receiver to come back."""


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
    kernel when an EPMD answers again. (A receiver given as a pid cannot come back: a
    restarted receiver is a new process. Give its name.)

    What :meth:`push_message` guarantees: pushes made while the client is not registered
    (before its first registration, and from the moment the receiver's node is gone or the
    receiver's ``DOWN`` arrives until it registered again) wait in a queue of at most
    ``max_queue`` and are sent in order as soon as it registered, before any later push; past
    ``max_queue`` it raises :class:`QueueFull`. A push is a cast, which nothing acknowledges:
    one handed to a live connection is lost if the server or the connection dies before the
    receiver read it, and one sent before the client learnt that its receiver process died
    is lost with that process. Once the client has stopped (its first connection failed, its
    node stopped) pushes raise :class:`ConnectError`; what was still queued is logged.

    ``node.spawn(client)``, then ``await client.connected()``.
    """

    def __init__(self, *, receiver: Pid | tuple[str, str] | None = None,
                 server: str | None = None, name: str = DEFAULT_NAME,
                 on_request: OnRequest | None = None, retries: int = 10,
                 retry_interval: float = 0.5, call_timeout: float = 5.0,
                 backoff: float = 0.2, max_backoff: float = 2.0,
                 max_queue: int = 10_000) -> None:
        super().__init__()
        self.target = receiver
        self.receiver_name = Atom(name)
        self.on_request = on_request
        self.retries = retries
        self.retry_interval = retry_interval
        self.call_timeout = call_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_queue = max_queue
        self.receiver: Pid | tuple[Atom, Atom] | None = None
        self._given_server = server is not None
        home = server if server is not None else (
            None if receiver is None else receiver.node if isinstance(receiver, Pid)
            else receiver[1])
        self.server: Atom | None = home if home is None or isinstance(home, Atom) \
            else Atom(home)
        self._monitor: Reference | None = None
        self._receiver_node: Atom | None = None
        self._connected: asyncio.Event = asyncio.Event()
        self._queue: deque[Any] = deque()
        # What the server (or any node) casts to the client is its to choose.
        self._unknown = Throttle(logger, logging.WARNING, "unknown casts to the client")

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
            registered = waiter.done()  # even if the receiver went down since: it did register
            waiter.cancel()
            done.cancel()
        if not registered:
            if self.exit_reason is not None:
                raise ConnectError(f"the client stopped: {loggable(self.exit_reason)}")
            raise TimedOut("the client did not connect in time")

    @property
    def is_connected(self) -> bool:
        """Whether the client is registered with a live receiver."""
        return self._connected.is_set()

    @property
    def queued(self) -> int:
        """How many pushes wait for the client to register (again)."""
        return len(self._queue)

    def push_message(self, data: Any) -> None:
        """``GenServer.cast(receiver, {:push_message, data})`` when registered, else queued
        (see the class's docstring). Raises :class:`QueueFull` when ``max_queue`` pushes wait
        already, :class:`ConnectError` once the client has stopped."""
        if self._connected.is_set():  # then nothing is queued: the queue went out first
            self.node.send(self.receiver, (GEN_CAST, (PUSH_MESSAGE, data)), sender=self.pid)
            return
        if self.exit_reason is not None:
            raise ConnectError(f"the client stopped ({loggable(self.exit_reason)}); "
                               f"start a new one to push again")
        queue = self._queue
        if len(queue) >= self.max_queue:
            raise QueueFull(
                f"the receiver is unreachable and {len(queue)} pushes wait for it already "
                f"(max_queue={self.max_queue}): wait for `await client.connected()` before "
                f"pushing more, or start the client with a larger max_queue")
        queue.append(data)

    # -- the process ---------------------------------------------------------------------------

    async def run(self) -> None:
        unwatch = self.node.monitor_nodes(self._node_event)
        try:
            await self._serve()
        finally:
            unwatch()
            self._connected.clear()
            if self._queue:
                logger.warning("client: stopped with %d queued pushes, never sent",
                               len(self._queue))

    def _node_event(self, node: Atom, up: bool) -> None:
        # The receiver's node is gone: from now on pushes are queued, before the DOWN (which
        # is in the mailbox already) is even read.
        if not up and node is self._receiver_node:
            self._connected.clear()

    async def _serve(self) -> None:
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
                    self._unknown.log("client: unknown cast %s", loggable(request))
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
        if server is not None and server is not self.node.name:
            try:  # checked: the reason is said once in our log line, not at every attempt
                await self.node.connect(server, check=True)
            except (OSError, HandshakeError, EpmdError, TimeoutError) as exc:
                raise ConnectError(f"cannot reach the node {server.name}: {exc}") from None
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
        node = self._receiver_node = receiver.node if isinstance(receiver, Pid) else receiver[1]
        if not self._given_server and node is not self.node.name:
            self.server = node  # where to look again if the receiver's node goes
        queue, send = self._queue, self.node.send
        logger.info("client: registered with %s%s", loggable(receiver),
                    f"; sending the {len(queue)} queued pushes" if queue else "")
        while queue:
            send(receiver, (GEN_CAST, (PUSH_MESSAGE, queue.popleft())), sender=self.pid)
        self._connected.set()
