"""The pipeline producer fed by a :class:`Receiver`, in push or pull mode."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, Literal

from pybroadway.erldist import Node, Process
from pybroadway.erldist.supervisor import ChildSpec
from pybroadway.errors import ArgumentError, StateError
from pybroadway.pipeline import Message, Producer
from pybroadway.term import Atom

from ._receiver import DEFAULT_NAME, Metadata, Receiver

logger = logging.getLogger("pybroadway.otp_distribution")

#: ``"push"``: data becomes messages whatever the demand; ``"pull"``: clients are asked.
Mode = Literal["push", "pull"]
#: What a full buffer does: block the senders, or drop the oldest or newest messages.
Overflow = Literal["block", "drop_oldest", "drop_newest"]


class OtpDistributionProducer(Producer):
    """A pipeline producer fed by BEAM (or Python) clients of the off_broadway_otp_distribution
    protocol. Use it as ``producer={"module": (OtpDistributionProducer, {"node": node, ...})}``.

    When the pipeline starts, the producer starts a :class:`Receiver` under the node's
    supervisor, registered locally and in ``:global`` as ``receiver_name``; it stops it when the
    pipeline stops. A receiver that crashes is restarted with both names; its clients see it
    go down (``:DOWN``) and register with the new one, which is asked for what the processors
    still want.

    ``mode="push"`` (default): whatever clients push becomes a message, whatever the demand.
    ``overflow`` decides what happens once ``buffer_size`` messages wait: ``"block"`` (default,
    lossless) stops reading from the connections of the clients' nodes until the buffer is
    down to ``resume_at``, so the BEAM senders wait; ``"drop_newest"`` discards what arrives
    while the buffer is full; ``"drop_oldest"`` keeps at most another ``buffer_size`` messages
    aside and discards the oldest of those. Drops are counted (:attr:`dropped`) and logged at
    most once a second.

    ``mode="pull"``: as many pull requests are kept in flight as the processors' demand is
    unmet, round robin over the registered clients; requests unanswered for ``pull_interval``
    seconds are asked again. ``request_atom`` is what the requests are
    (``"request_message"``, or ``"pull_message"`` for clients of the library's later versions).

    ``message_log_level``: level of the per-message log lines (``push_message: ...``); pull
    requests are logged at DEBUG.
    ``register_global``: whether to register the receiver in ``:global``.
    """

    # Declared so that defining handle_demand does not make every instance a pull producer;
    # each instance sets its own from its ``mode`` option.
    mode: Mode = "push"

    def __init__(self, *, node: Node, mode: Mode = "push", receiver_name: str = DEFAULT_NAME,
                 overflow: Overflow = "block", pull_interval: float = 5.0,
                 request_atom: str = "request_message", register_global: bool = True,
                 message_log_level: int = logging.DEBUG, buffer_size: int = 10_000,
                 resume_at: int | None = None) -> None:
        if mode not in ("push", "pull"):
            raise ArgumentError(f"mode must be 'push' or 'pull', not {mode!r}")
        if overflow not in ("block", "drop_oldest", "drop_newest"):
            raise ArgumentError(f"overflow must be block, drop_oldest or drop_newest: {overflow!r}")
        super().__init__(buffer_size=buffer_size, resume_at=resume_at)
        self.node = node
        self.mode = mode
        self.overflow: Overflow = overflow
        self.register_global = register_global
        self.dropped = 0
        self._dropped_unlogged = 0
        self._drop_log_at = 0.0
        self._drop_timer: asyncio.TimerHandle | None = None
        self._aside: deque[Message] = deque()
        self._receiver_options: dict[str, Any] = {
            "name": receiver_name, "request_atom": request_atom,
            "pull_interval": pull_interval, "message_log_level": message_log_level,
            "pull": mode == "pull"}
        self.receiver = Receiver(self, **self._receiver_options)
        self._receiver_spec = ChildSpec(
            id=f"receiver {receiver_name}", start=self._new_receiver, name=receiver_name,
            on_start=self._receiver_started)
        self._receiver_drains = False
        self._received_before: dict[Atom | None, int] = {}  # counted by earlier receivers

    def received_by_node(self) -> dict[Atom | None, int]:
        """Data messages the receiver (and the ones it restarted from) took, per sending node;
        None counts local senders and the nodes beyond the first ``COUNTED_NODES``."""
        counts = dict(self._received_before)
        for node, count in self.receiver.received_by_node().items():
            counts[node] = counts.get(node, 0) + count
        return counts

    def _new_receiver(self) -> Receiver:
        # The first start uses the receiver made with the producer; a restart, a new one.
        receiver = self.receiver
        if receiver.alive or receiver.exit_reason is not None:
            self._received_before = self.received_by_node()
            receiver = self.receiver = Receiver(self, **self._receiver_options)
        return receiver

    async def _receiver_started(self, process: Process) -> None:
        """A receiver (first or restarted) runs: register it in ``:global`` and give it what
        this producer is in the middle of: pending demand, paused reading, draining."""
        if self.register_global:
            await self.receiver.register_global()
        if self._receiver_drains:
            self.receiver.drain()
            return
        if self.overflow == "block" and self.is_full:
            self.receiver.pause_clients()
        if self.mode == "pull" and self.pending_demand:
            self.receiver.want(self.pending_demand)

    async def on_start(self) -> None:
        """Start the receiver under the node's supervisor and register it (locally, then in
        ``:global``)."""
        supervisor = self.node.supervisor
        if supervisor is None:
            raise StateError(f"start {self.node} before the pipeline that uses it")
        await supervisor.start_child(self._receiver_spec)
        logger.info("%s: receiver %s started in %s mode", self.name, self.receiver.name.name,
                    self.mode)

    def prepare_for_draining(self) -> None:
        """Take no more data from the clients (their connections stop being read) and pass on
        what already arrived, so that everything accepted is handled, none failed."""
        self._receiver_drains = True
        self.receiver.drain()

    async def on_stop(self) -> None:
        """Stop the receiver."""
        supervisor = self.node.supervisor
        if supervisor is not None and supervisor.alive:
            with contextlib.suppress(KeyError):  # the node may be stopping it already
                await supervisor.terminate_child(self._receiver_spec.id)
        if self._drop_timer is not None:
            self._drop_timer.cancel()
            self._log_drops()

    # -- push --------------------------------------------------------------------------------

    def pushed(self, data: list[Any], metadata: list[Metadata]) -> None:
        """Data clients pushed (called by the receiver)."""
        messages = list(map(Message, data, metadata))
        if self.overflow == "block" or self.buffer_size is None:
            self.push_messages(messages)
            return
        # A drop policy: the buffer takes what it has room for (waiting processors take some
        # at once, which makes more room), the policy decides the rest.
        while messages and (room := self.buffer_size - self.buffered) > 0:
            self.push_messages(messages[:room])
            messages = messages[room:]
        if not messages:
            return
        if self.overflow == "drop_newest":
            self._drop(len(messages))
        else:
            aside = self._aside
            aside.extend(messages)
            excess = len(aside) - (self.buffer_size or 0)
            if excess > 0:
                for _ in range(excess):
                    aside.popleft()
                self._drop(excess)

    def on_buffer_full(self) -> None:
        """Lossless mode: stop reading from the clients' connections."""
        if self.overflow == "block":
            self.receiver.pause_clients()

    def on_buffer_available(self) -> None:
        """Read again (block), or move what was kept aside into the buffer (drop_oldest)."""
        if self.overflow == "block":
            self.receiver.resume_clients()
        aside = self._aside
        while aside and not self.is_full:
            count = min(len(aside), max(1, (self.buffer_size or 1) - self.buffered))
            self.push_messages([aside.popleft() for _ in range(count)])

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._dropped_unlogged += count
        if self._drop_timer is None:
            wait = self._drop_log_at + 1.0 - time.monotonic()
            if wait <= 0:
                self._log_drops()
            else:
                self._drop_timer = asyncio.get_running_loop().call_later(wait, self._log_drops)

    def _log_drops(self) -> None:
        self._drop_timer = None
        if self._dropped_unlogged:
            logger.warning("%s: buffer full (%s), dropped %d messages (%d in all)", self.name,
                           self.overflow, self._dropped_unlogged, self.dropped)
            self._dropped_unlogged = 0
            self._drop_log_at = time.monotonic()

    # -- pull --------------------------------------------------------------------------------

    def handle_demand(self, demand: int) -> None:
        """Keep as many pull requests in flight as the demand is unmet (pull mode only)."""
        logger.debug("pull_messages: %d", demand)  # like the requests: not the data
        self.receiver.want(self.pending_demand)

    def answered(self, data: list[Any], metadata: list[Metadata]) -> None:
        """Answers to pull requests (called by the receiver)."""
        self.push_messages(list(map(Message, data, metadata)))
        self.receiver.want(self.pending_demand)
