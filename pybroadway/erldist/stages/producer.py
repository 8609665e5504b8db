"""A Python process that is a GenStage producer, for BEAM consumers and for Python ones.

    stage = node.spawn(ProducerStage(), name="events")
    await stage.emit([b"a", b"b"])          # waits while the buffer is full

An Elixir consumer subscribes with ``GenStage.sync_subscribe(consumer, to: {:events, :"py@host"})``
(or ``subscribe_to: [{{:events, :"py@host"}, max_demand: 100}]``) and receives the events,
never more than it asked for.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterable
from typing import Any, Literal

from pybroadway._throttle import Throttle
from pybroadway.erldist.process import Process
from pybroadway.errors import ArgumentError, StateError
from pybroadway.term import Atom, Pid, Reference, loggable
from pybroadway.term.atoms import DOWN

from . import protocol as gs
from .dispatchers import DemandDispatcher, Dispatcher, Subscriber


class StageStopped(StateError):
    """Events were given to a producer stage that has exited; ``unsent`` are those of them it
    had not taken."""

    def __init__(self, message: str, unsent: list[Any] | None = None) -> None:
        super().__init__(message)
        self.unsent: list[Any] = unsent if unsent is not None else []

log = logging.getLogger("pybroadway.erldist.stages")

BufferKeep = Literal["first", "last"]

DEFAULT_MAX_SUBSCRIPTIONS = 1024
"""Subscriptions a producer holds at most (each is state a peer makes us keep)."""
DEFAULT_MAX_SUBSCRIPTIONS_PER_NODE = 128
"""Subscriptions the consumers of one node hold at most: well under the total, so that no
one node can take every subscription from the others (a worker that rejoins, say)."""
MESSAGE_BYTES = 1024 * 1024
"""Binary events that add up to more than this go to a consumer in several messages of at
most about this size, each within its demand as one would be: the consumer takes the first
and asks again while the rest is on its way, where one message of many megabytes would
make each demand wait for the whole of it to arrive (a BEAM cuts such a message into
fragments on the wire; the protocol's answer is more messages)."""


def _message_sizes(batch: list[Any]) -> int:
    """How many events of ``batch`` go in one message: all, unless its events are large
    binaries (judged by the first, so that a batch of small events costs no walk)."""
    first = batch[0] if batch else None
    if type(first) is bytes and len(first) * len(batch) > MESSAGE_BYTES:
        return max(1, MESSAGE_BYTES // len(first))
    return len(batch)


class ProducerStage(Process):
    """A GenStage producer.

    Events come from :meth:`emit` (awaitable: waits while ``buffer_size`` events wait for
    demand), :meth:`emit_nowait` (never waits: past ``buffer_size`` the buffer keeps the
    ``buffer_keep`` ones, ``"last"`` by default as GenStage, and the rest are dropped, counted
    and logged), or a subclass's :meth:`handle_demand`, called with each new demand.

    ``dispatcher``: :class:`DemandDispatcher` (default), ``BroadcastDispatcher`` or
    ``PartitionDispatcher``. ``max_subscriptions`` (in all) and ``max_subscriptions_per_node``
    (of the consumers of one node, this one's included): more subscriptions are refused with
    ``{:cancel, :too_many_subscriptions}``. A consumer that goes down (or whose node does)
    loses its subscription and the demand it had.

    Answers as GenStage does: a subscription whose tag is already known gets
    ``{:cancel, :duplicated_subscription}``; an ask on an unknown subscription gets
    ``{:cancel, :unknown_subscription}``; a consumer's cancel is confirmed with a cancel of
    the same reason. Where GenStage's producer would crash (bad options, a demand that is not
    a positive integer), this one cancels that subscription with ``{:bad_opts, why}`` or
    ``{:bad_demand, value}`` and goes on.
    """

    def __init__(self, *, dispatcher: Dispatcher | None = None, buffer_size: int | None = 10_000,
                 buffer_keep: BufferKeep = "last",
                 max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
                 max_subscriptions_per_node: int = DEFAULT_MAX_SUBSCRIPTIONS_PER_NODE) -> None:
        super().__init__()
        if buffer_keep not in ("first", "last"):
            raise ArgumentError(f"buffer_keep must be 'first' or 'last', not {buffer_keep!r}")
        if max_subscriptions_per_node < 1:
            raise ArgumentError(f"max_subscriptions_per_node must be at least 1, "
                                f"not {max_subscriptions_per_node!r}")
        self.dispatcher = dispatcher if dispatcher is not None else DemandDispatcher()
        self.buffer_size = buffer_size
        self.buffer_keep: BufferKeep = buffer_keep
        self.max_subscriptions = max_subscriptions
        self.max_subscriptions_per_node = max_subscriptions_per_node
        self.subscribers: dict[tuple[Pid, Any], Subscriber] = {}
        self._per_node: dict[Atom, int] = {}  # subscriptions held by each node's consumers
        self._by_monitor: dict[Reference, Subscriber] = {}
        self.emitted = 0
        """Events taken in (emitted, or returned by handle_demand)."""
        self.dispatched = 0
        """Events sent to consumers (once per consumer: broadcast counts each copy)."""
        self.dropped = 0
        self.asked = 0
        """Demand received from all consumers."""
        self._room = asyncio.Event()
        self._room.set()
        self._pulls = type(self).handle_demand is not ProducerStage.handle_demand
        self._dropped_log = Throttle(log, logging.WARNING, "buffer overflows")
        self._protocol_log = Throttle(log, logging.WARNING, "protocol errors")
        self._refused_log = Throttle(log, logging.WARNING, "refused subscriptions")

    def deliver_from(self, sender: Pid | None, message: Any) -> None:
        # One that names another node's process could take that node's subscriptions (its
        # share of them, a worker's place) or cancel them.
        if gs.from_sender(sender, message, gs.GEN_PRODUCER, self._protocol_log, self):
            super().deliver_from(sender, message)

    # -- the user's side ---------------------------------------------------------------------

    async def emit(self, events: Iterable[Any]) -> None:
        """Add events (in order); waits while the buffer holds ``buffer_size`` events or more,
        so memory stays bounded by what consumers take. Concurrent calls interleave by chunk."""
        batch = events if type(events) is list else list(events)
        size = self.buffer_size
        while batch:
            self._check_running(batch)
            if size is None:
                room = len(batch)
            else:
                while (room := size - self.dispatcher.buffered) <= 0:
                    self._room.clear()
                    await self._room.wait()
                    self._check_running(batch)
            part, batch = (batch, []) if room >= len(batch) else (batch[:room], batch[room:])
            self.emitted += len(part)
            self.dispatcher.put(part)
            self._dispatch()

    def _check_running(self, unsent: list[Any]) -> None:
        if self._exited is not None and self._exited.is_set():
            raise StageStopped(f"{self!r} has stopped ({loggable(self.exit_reason)}): "
                               f"nothing it is given reaches a consumer", unsent)

    def emit_nowait(self, events: Iterable[Any]) -> int:
        """Add events without waiting; past ``buffer_size``, keep ``buffer_keep`` events and
        drop the others. Returns how many were dropped. Raises :class:`StageStopped` (its
        ``unsent``: the events) if the stage has exited, as :meth:`emit` does: they would
        reach no consumer."""
        batch = events if type(events) is list else list(events)
        self._check_running(batch)
        self.emitted += len(batch)
        dropped = 0
        size = self.buffer_size
        if size is not None and self.buffer_keep == "first":
            room = max(0, size - self.dispatcher.buffered)
            if room < len(batch):
                dropped, batch = len(batch) - room, batch[:room]
        self.dispatcher.put(batch)
        self._dispatch()
        if size is not None and self.buffer_keep == "last":
            excess = self.dispatcher.buffered - size
            if excess > 0:
                dropped += self.dispatcher.drop_oldest(excess)
        if dropped:
            self.dropped += dropped
            self._dropped_log.log("%r: buffer full (%s events), dropped %d (%d in all)", self,
                                  size, dropped, self.dropped)
        return dropped

    def handle_demand(self, demand: int) -> Iterable[Any] | None:
        """Override to produce on demand: called with each new demand (an ask); return events
        (or None), plain or as a coroutine. Returned events are emitted with
        :meth:`emit_nowait`."""
        return None

    def on_subscribe(self, subscriber: Subscriber) -> None:
        """Called when a consumer subscribed."""

    def on_cancel(self, subscriber: Subscriber, reason: Any) -> None:
        """Called when a subscription ended (a cancel, or the consumer went down)."""

    @property
    def buffered(self) -> int:
        """Events waiting for demand."""
        return self.dispatcher.buffered

    @property
    def demand(self) -> int:
        """Demand asked by the consumers and not yet met."""
        return sum(subscriber.demand for subscriber in self.subscribers.values())

    def cancel(self, subscriber: Subscriber, reason: Any) -> None:
        """End a subscription from this side: the consumer gets ``{:cancel, reason}``."""
        if self.subscribers.get((subscriber.pid, subscriber.tag)) is subscriber:
            self._remove(subscriber, reason)
            self.send(subscriber.pid, gs.cancel_consumer(self.pid, subscriber.tag, reason))

    # -- the protocol ------------------------------------------------------------------------

    async def run(self) -> Any:
        try:
            await self._serve()
        finally:  # wake whoever waits in emit(): it is told the stage stopped
            self._room.set()

    async def _serve(self) -> None:
        receive = self.receive
        handle_demand_async = inspect.iscoroutinefunction(self.handle_demand)
        while True:
            message = await receive()
            request = gs.split_from(message, gs.GEN_PRODUCER)
            if request is not None:
                demand = self._request(*request)
                if demand and self._pulls:
                    result = self.handle_demand(demand)
                    if handle_demand_async:
                        result = await result  # type: ignore[misc]
                    if result is not None:
                        self.emit_nowait(result)
                continue
            if type(message) is tuple and len(message) == 5 and message[0] is DOWN:
                subscriber = self._by_monitor.get(message[1])
                if subscriber is not None:
                    self._remove(subscriber, message[4], monitored=False)
                    continue
            if gs.tagged(message, gs.GEN_PRODUCER):
                self._protocol_log.log("%r: malformed request ignored: %s", self,
                                       loggable(message))
                continue
            self.handle_info(message)

    def _request(self, pid: Pid, tag: Any, request: Any) -> int:
        """Handle one ``$gen_producer`` request; returns the new demand it brought (0)."""
        try:
            key = (pid, tag)
            subscriber = self.subscribers.get(key)
        except TypeError:  # an unhashable tag: nobody's subscription
            self._protocol_log.log("%r: unhashable tag from %s", self, loggable(pid))
            return 0
        if type(request) is not tuple or not request:
            self._protocol_log.log("%r: bad request from %s: %s", self, loggable(pid),
                                   loggable(request))
            return 0
        kind = request[0]
        if kind is gs.ASK and len(request) == 2:
            demand = request[1]
            if subscriber is None:
                self.send(pid, gs.cancel_consumer(self.pid, tag, gs.UNKNOWN_SUBSCRIPTION))
                return 0
            if type(demand) is not int or demand < 1:
                self.cancel(subscriber, (gs.BAD_DEMAND, demand))
                return 0
            self.asked += demand
            self.dispatcher.ask(subscriber, demand)
            self._dispatch()
            return demand
        if kind is gs.SUBSCRIBE and len(request) == 3:
            if subscriber is not None:
                self.send(pid, gs.cancel_consumer(self.pid, tag, gs.DUPLICATED_SUBSCRIPTION))
            else:
                self._subscribe(pid, tag, request[2])
            return 0
        if kind is gs.CANCEL and len(request) == 2:
            if subscriber is not None:  # an unknown one is ignored, as GenStage does
                self.cancel(subscriber, request[1])
            return 0
        self._protocol_log.log("%r: unknown request from %s: %s", self, loggable(pid),
                               loggable(request))
        return 0

    def _subscribe(self, pid: Pid, tag: Any, options: Any) -> None:
        node = pid.node
        of_node = self._per_node.get(node, 0)
        if len(self.subscribers) >= self.max_subscriptions \
                or of_node >= self.max_subscriptions_per_node:
            self._refused_log.log(
                "%r: refused a subscription of %s: %d subscriptions already, %d of them from "
                "%s (at most %d, %d per node)", self, loggable(pid), len(self.subscribers),
                of_node, node.name, self.max_subscriptions, self.max_subscriptions_per_node)
            self.send(pid, gs.cancel_consumer(self.pid, tag, gs.TOO_MANY_SUBSCRIPTIONS))
            return
        subscriber = Subscriber(pid, tag, gs.keyword(options))
        refused = self.dispatcher.subscribe(subscriber)
        if refused is not None:
            self._refused_log.log("%r: refused a subscription of %s: %s", self, loggable(pid),
                                  loggable(refused))
            self.send(pid, gs.cancel_consumer(self.pid, tag, (gs.BAD_OPTS, repr(refused))))
            return
        subscriber.monitor = self.monitor(pid)
        self.subscribers[(pid, tag)] = subscriber
        self._per_node[node] = of_node + 1
        self._by_monitor[subscriber.monitor] = subscriber
        log.debug("%r: %s subscribed", self, loggable(pid))
        self.on_subscribe(subscriber)

    def _remove(self, subscriber: Subscriber, reason: Any, *, monitored: bool = True) -> None:
        del self.subscribers[(subscriber.pid, subscriber.tag)]
        node = subscriber.pid.node
        left = self._per_node[node] - 1
        if left:
            self._per_node[node] = left
        else:
            del self._per_node[node]
        self._by_monitor.pop(subscriber.monitor, None)
        if monitored:
            self.demonitor(subscriber.monitor)
        self.dispatcher.cancel(subscriber)
        log.debug("%r: subscription of %s ended: %s", self, loggable(subscriber.pid),
                  loggable(reason))
        self.on_cancel(subscriber, reason)
        self._dispatch()  # a broadcast may move on without it

    def _dispatch(self) -> None:
        self.dispatcher.dispatch(self._send_events)
        size = self.buffer_size
        if size is None or self.dispatcher.buffered < size:
            self._room.set()

    def _send_events(self, subscriber: Subscriber, batch: list[Any]) -> None:
        self.dispatched += len(batch)
        to, head = subscriber.pid, (self.pid, subscriber.tag)
        each = _message_sizes(batch)
        if each == len(batch):
            self.node.send(to, (gs.GEN_CONSUMER, head, batch), sender=self.pid)
            return
        for start in range(0, len(batch), each):
            self.node.send(to, (gs.GEN_CONSUMER, head, batch[start:start + each]),
                           sender=self.pid)
