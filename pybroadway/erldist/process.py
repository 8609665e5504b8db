"""Processes of a Python node: a pid, a mailbox with selective receive, links, monitors.

A process is a coroutine (its :meth:`Process.run`) in one asyncio task. Messages are appended
to its mailbox by the node in the order they arrive; :meth:`Process.receive` takes the first
that matches. When ``run`` ends the process exits (``normal`` on return, ``Exit.reason`` when
it raises :class:`Exit`, ``{exception, "Type: message"}`` for any other exception), and the
node sends exit signals to its links and ``DOWN`` messages to its monitors, local or remote.

A process sees its node through :class:`ProcessHost`, declared here so that this module needs
nothing of :mod:`~pybroadway.erldist.node`, which implements it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pybroadway._aio import maybe_await
from pybroadway.errors import PyBroadwayError
from pybroadway.term import Atom, Pid, Reference
from pybroadway.term.atoms import KILL, KILLED, NORMAL

if TYPE_CHECKING:
    from pybroadway.erldist.connection import Connection
    from pybroadway.erldist.connections import NodeWatcher


Match = Callable[[Any], bool]
P = TypeVar("P", bound="Process")


class Exit(PyBroadwayError):
    """Raise ``Exit(reason)`` in a process to end it with ``reason`` (any term)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def exception_reason(exc: BaseException) -> Any:
    """The exit reason a Python exception becomes on the BEAM side."""
    if isinstance(exc, Exit):
        return exc.reason
    return (Atom("exception"), f"{type(exc).__name__}: {exc}")


class ProcessSignals(Protocol):
    """The links, monitors and exits a process signals through (the node's
    :class:`~pybroadway.erldist.signals.Signals`)."""

    def link(self, process: Process, pid: Pid) -> None:
        """Link ``process`` to ``pid``."""

    def unlink(self, process: Process, pid: Pid) -> None:
        """Remove the link between ``process`` and ``pid``."""

    def monitor(self, process: Process, target: Any) -> Reference:
        """``process`` monitors ``target``; returns the monitor's reference."""

    def demonitor(self, process: Process, ref: Reference) -> None:
        """``process`` drops its monitor ``ref``."""

    def process_exited(self, process: Process, reason: Any) -> None:
        """``process`` has ended with ``reason``."""


class ProcessHost(Protocol):
    """What a process sees of the node it runs on, as ``self.node`` (the
    :class:`~pybroadway.erldist.node.Node` it was spawned on, which documents each member)."""

    @property
    def name(self) -> Atom:
        """The node's name."""

    @property
    def creation(self) -> int:
        """The node's creation, which its pids and references carry."""

    @property
    def log(self) -> logging.Logger:
        """Where a crashing process is logged."""

    @property
    def signals(self) -> ProcessSignals:
        """The node's links, monitors and exit signals."""

    def spawn(self, process: P, *, name: str | Atom | None = None,
              link: Pid | None = None) -> P:
        """Start ``process`` on the node."""

    def register(self, name: str | Atom, process: Process) -> None:
        """Register a local name."""

    def whereis(self, name: str | Atom) -> Pid | None:
        """The pid registered as ``name``, or None."""

    def process(self, pid: Pid) -> Process | None:
        """The local process of ``pid``, or None."""

    def send(self, to: Any, message: Any, *, sender: Pid | None = None) -> None:
        """Send ``message`` to a pid, a local name, or ``(name, node)``."""

    def gen_reply(self, sender: Pid, to: Pid, tag: Any, reply: Any) -> None:
        """Answer a gen call."""

    def exit(self, pid: Pid, reason: Any, *, sender: Pid | None = None) -> None:
        """Send an exit signal to ``pid``."""

    def make_ref(self) -> Reference:
        """A new reference of the node."""

    def start_task(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in a task the node keeps until it ends."""

    def nodes(self) -> list[Atom]:
        """The nodes connected to this one."""

    def connection(self, node: str | Atom) -> Connection | None:
        """The connection to ``node``, or None."""

    async def connect(self, node: str | Atom, *, check: bool = False) -> bool:
        """Connect to ``node``; True once connected."""

    def disconnect(self, node: str | Atom) -> bool:
        """Drop the connection to ``node``; True if there was one."""

    def monitor_nodes(self, watcher: NodeWatcher) -> Callable[[], None]:
        """Call ``watcher(node, up)`` on every nodeup/nodedown; returns an unsubscribe."""


class Process:
    """Subclass and override :meth:`run`, then ``node.spawn(MyProcess())``.

    Inside ``run``: ``await self.receive()``, ``self.send(to, message)``, ``self.link(pid)``,
    ``self.monitor(target)``; set ``self.trap_exit = True`` to receive exit signals as
    ``(Atom("EXIT"), from_pid, reason)`` messages instead of dying from them.
    """

    node: ProcessHost
    pid: Pid

    def __init__(self) -> None:
        self.trap_exit = False
        self.exit_reason: Any = None
        self._mailbox: deque[Any] = deque()
        # The receives waiting, one per task receiving: a message wakes them all, each to
        # look for its own (global's locker waits for a lock attempt's replies in one task
        # and for a release's in another).
        self._receivers: list[asyncio.Future[None]] = []
        # How many messages were taken from the mailbox: a receive that sees this change
        # while it waits looks again from the start, as what it had looked at has moved.
        self._mailbox_takes = 0
        self._task: asyncio.Task[Any] | None = None
        self._exited: asyncio.Event | None = None  # created when spawned
        self.links: set[Pid] = set()
        # monitors this process holds: ref -> the target as given
        self.monitors: dict[Reference, Any] = {}
        # monitors others hold on this process: ref -> (watcher pid, the target as they gave it)
        self.watchers: dict[Reference, tuple[Pid, Any]] = {}
        self.names: set[Atom] = set()

    def __repr__(self) -> str:
        pid = getattr(self, "pid", None)
        return f"<{type(self).__name__} {pid!r}>"

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> Any:
        """The process's body. The default waits for messages and passes them to
        :meth:`handle_info` forever."""
        while True:
            await maybe_await(self.handle_info(await self.receive()))

    def handle_info(self, message: Any) -> Any:
        """Called by the default :meth:`run` for each message (a plain method or a
        coroutine)."""

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait(self) -> Any:
        """Wait until the process has exited; return its exit reason."""
        assert self._exited is not None, "the process was never spawned"
        await self._exited.wait()
        return self.exit_reason

    def _start(self, node: ProcessHost, pid: Pid) -> None:
        self.node = node
        self.pid = pid
        self._exited = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._main(), name=f"process-{pid.id}")
        self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        # A task cancelled before its first step never runs _main: exit here instead.
        assert self._exited is not None
        if not self._exited.is_set():
            self.exit_reason = self.exit_reason if self.exit_reason is not None else KILLED
            self.node.signals.process_exited(self, self.exit_reason)
            self._exited.set()

    async def _main(self) -> None:
        reason: Any = NORMAL
        try:
            await self.run()
        except asyncio.CancelledError:
            reason = self.exit_reason if self.exit_reason is not None else KILLED
        except Exit as exc:
            reason = exc.reason
        except Exception as exc:
            reason = exception_reason(exc)
            self.node.log.error("process %r crashed: %s", self, exc, exc_info=exc)
        self.exit_reason = reason
        self.node.signals.process_exited(self, reason)
        assert self._exited is not None
        self._exited.set()

    def _terminate(self, reason: Any) -> None:
        """End the process from outside (an exit signal): its task is cancelled. The first
        reason stands, except ``kill``'s (``killed``); and every signal cancels again: a task
        may have lost a cancellation (``asyncio.wait_for`` on Python 3.11 drops one that
        comes as its inner future completes), and a ``kill`` must end it all the same."""
        task = self._task
        if task is None or task.done():
            return
        if reason is KILL or reason is KILLED:
            self.exit_reason = KILLED
        elif self.exit_reason is None:
            self.exit_reason = reason
        task.cancel()

    def exit(self, reason: Any = NORMAL) -> None:
        """End this process with ``reason`` (from outside it; inside, raise :class:`Exit`)."""
        self._terminate(reason)

    # -- mailbox ----------------------------------------------------------------------------

    def deliver(self, message: Any) -> None:
        """Put ``message`` in the mailbox (the node calls this; order is arrival order)."""
        self._mailbox.append(message)
        receivers = self._receivers
        if receivers:
            for waiter in receivers:
                if not waiter.done():
                    waiter.set_result(None)
            receivers.clear()

    def deliver_from(self, sender: Pid | None, message: Any) -> None:
        """Called by the node for each message, with the sending pid when the sender is known
        (SEND_SENDER and REG_SEND carry it, plain SEND does not; from a peer, only a pid of
        the node whose connection it came on, see
        :meth:`~pybroadway.erldist.connection.Connection.sender`). The default puts the
        message in the mailbox; a process may override it to take some messages at once, in
        the connection's reading path, without a mailbox hop (it must not block)."""
        self.deliver(message)

    def deliver_all_from(self, sender: Pid | None, messages: list[Any]) -> None:
        """:meth:`deliver_from` for each of ``messages``, in order, all from ``sender``: the
        node hands over a connection's run of sends to one process at once. A process may
        override it to take them faster, as :meth:`deliver_from` does them."""
        for message in messages:
            self.deliver_from(sender, message)

    async def receive(self, match: Match | None = None, timeout: float | None = None) -> Any:
        """Take the first message (or the first for which ``match`` is true) from the mailbox,
        waiting for it. Raises ``TimeoutError`` after ``timeout`` seconds. Several tasks of
        the process may receive at once, each with its own ``match``: a message goes to one
        of them."""
        mailbox = self._mailbox
        if match is None and mailbox:
            self._mailbox_takes += 1
            return mailbox.popleft()
        if timeout is None:
            return await self._receive(match)
        async with asyncio.timeout(timeout):
            return await self._receive(match)

    async def _receive(self, match: Match | None) -> Any:
        mailbox = self._mailbox
        scanned = 0
        while True:
            if match is None:
                if mailbox:
                    self._mailbox_takes += 1
                    return mailbox.popleft()
            else:
                for index in range(scanned, len(mailbox)):
                    if match(mailbox[index]):
                        return self._take_at(index)
                scanned = len(mailbox)
            taken = self._mailbox_takes
            waiter = asyncio.get_running_loop().create_future()
            self._receivers.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._receivers:  # not woken: a timeout or an exit ended the wait
                    self._receivers.remove(waiter)
            if self._mailbox_takes != taken:
                scanned = 0

    def _take_at(self, index: int) -> Any:
        """Remove the message at ``index`` of the mailbox and return it."""
        mailbox = self._mailbox
        message = mailbox[index]
        del mailbox[index]
        self._mailbox_takes += 1
        return message

    @property
    def mailbox_size(self) -> int:
        return len(self._mailbox)

    # -- signals to others --------------------------------------------------------------------

    def send(self, to: Any, message: Any) -> None:
        """Send ``message`` to a pid, a local registered name, or ``(name, node)``."""
        self.node.send(to, message, sender=self.pid)

    def link(self, pid: Pid) -> None:
        self.node.signals.link(self, pid)

    def unlink(self, pid: Pid) -> None:
        self.node.signals.unlink(self, pid)

    def monitor(self, target: Any) -> Reference:
        """Monitor a pid, a registered name or ``(name, node)``; a ``DOWN`` message
        ``(Atom("DOWN"), ref, Atom("process"), target, reason)`` arrives when it ends."""
        return self.node.signals.monitor(self, target)

    def demonitor(self, ref: Reference) -> None:
        self.node.signals.demonitor(self, ref)

    def register(self, name: str | Atom) -> None:
        self.node.register(name, self)
