"""A Python process that is a GenStage consumer, of BEAM producers and of Python ones.

    class Printer(ConsumerStage):
        def handle_events(self, events, subscription):
            print(events)

    consumer = node.spawn(Printer())
    consumer.subscribe(("events", "app@host"), max_demand=100)
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from pybroadway._throttle import Throttle
from pybroadway.erldist.process import Exit, Process
from pybroadway.erldist.targets import node_of
from pybroadway.errors import StateError
from pybroadway.term import Atom, Charlist, Pid, Reference, loggable
from pybroadway.term.atoms import DOWN, NORMAL

from . import protocol as gs
from .protocol import CancelMode, SubscribeOptions

log = logging.getLogger("pybroadway.erldist.stages")


class Subscription:
    """One subscription, on the consumer's side. ``tag`` is the monitor reference on the
    producer (sent in every message of the subscription); ``node`` the producer's node;
    ``pid`` the producer's pid once a message from it told it; ``pending`` the demand asked
    and not yet met; ``received`` the events taken; ``exceeded`` the events that came beyond
    the demand (a producer's error)."""

    __slots__ = ("cancelling", "exceeded", "manual", "node", "options", "pending", "pid",
                 "producer", "received", "tag")

    def __init__(self, producer: Any, tag: Reference, options: SubscribeOptions,
                 manual: bool, node: Atom) -> None:
        self.producer = producer
        self.tag = tag
        self.options = options
        self.manual = manual
        self.node = node
        self.pid: Pid | None = producer if type(producer) is Pid else None
        self.pending = 0
        self.received = 0
        self.exceeded = 0
        self.cancelling = False

    @property
    def address(self) -> Any:
        """Where requests go: the producer's pid once known, else the target as given."""
        return self.pid if self.pid is not None else self.producer

    def __repr__(self) -> str:
        return f"<Subscription to {self.producer!r} pending={self.pending}>"


class ConsumerStage(Process):
    """A GenStage consumer: :meth:`subscribe` to producers (pids, local names or
    ``(name, node)``), handle their events in :meth:`handle_events`.

    The producer is monitored before the subscription is sent. In automatic demand (the
    default) the consumer asks ``max_demand`` at first; events come to :meth:`handle_events`
    in batches of at most ``max_demand - min_demand``, and after each, once what is asked and
    not yet handled falls to ``min_demand``, it asks up to ``max_demand`` again, as GenStage
    does. With ``manual=True`` it asks only what :meth:`ask` says, and each arrival is one
    batch.

    A subscription ends when the producer cancels it (or confirms the consumer's
    :meth:`cancel`) or goes down (``:DOWN``, also when its node goes down). Then
    :meth:`on_cancel` runs, and the ``cancel`` mode decides: ``"permanent"`` (default) the
    consumer exits with the reason, ``"transient"`` only if the reason is not ``normal``,
    ``shutdown`` or ``{shutdown, _}``, ``"temporary"`` never. Events on a subscription it does
    not know are answered with ``{:cancel, :unknown_subscription}``, as GenStage does.

    What a producer sends is checked first: a message on a subscription must come from its
    producer (the pid subscribed to, or the first pid of the producer's node that answered a
    name), else it is ignored with a throttled warning. Events beyond the demand (a
    producer's error) are counted in ``exceeded`` and logged once per subscription; they are
    handled, as GenStage does, unless ``drop_excess`` (then dropped: what is held stays
    bounded by the demand). Either way they are never asked for again.
    """

    def __init__(self, *, max_subscriptions: int = 1024, drop_excess: bool = False) -> None:
        super().__init__()
        self.max_subscriptions = max_subscriptions
        self.drop_excess = drop_excess
        self.subscriptions: dict[Any, Subscription] = {}
        self._protocol_log = Throttle(log, logging.WARNING, "protocol errors")

    def deliver_from(self, sender: Pid | None, message: Any) -> None:
        # Events or a cancel in the producer's name from another node are forged.
        if gs.from_sender(sender, message, gs.GEN_CONSUMER, self._protocol_log, self):
            super().deliver_from(sender, message)

    # -- the user's side ---------------------------------------------------------------------

    def subscribe(self, to: Any, *, max_demand: int = gs.DEFAULT_MAX_DEMAND,
                  min_demand: int | None = None, cancel: CancelMode = "permanent",
                  partition: Any = None, manual: bool = False, **extra: Any) -> Subscription:
        """Subscribe to the producer ``to``; returns the subscription (its ``tag`` names it).
        Call it once the stage is spawned."""
        if len(self.subscriptions) >= self.max_subscriptions:
            raise StateError(f"{self!r} holds {len(self.subscriptions)} subscriptions "
                             f"already (max_subscriptions)")
        options = SubscribeOptions(max_demand, min_demand, cancel, partition, extra)
        tag = self.monitor(to)
        subscription = Subscription(to, tag, options, manual, node_of(to, self.node.name))
        self.subscriptions[tag] = subscription
        self.send(to, gs.subscribe(self.pid, tag, options.keyword()))
        if not manual:
            self.ask(subscription, options.max_demand)
        return subscription

    def ask(self, subscription: Subscription, demand: int) -> None:
        """Ask the producer for ``demand`` more events (manual demand)."""
        if demand > 0 and not subscription.cancelling:
            subscription.pending += demand
            self.send(subscription.address, gs.ask(self.pid, subscription.tag, demand))

    def cancel(self, subscription: Subscription, reason: Any = NORMAL) -> None:
        """Ask the producer to end the subscription. Events already sent still arrive; the
        producer's confirming cancel ends it (and the ``cancel`` mode applies to it)."""
        if subscription.tag in self.subscriptions and not subscription.cancelling:
            subscription.cancelling = True
            self.send(subscription.address,
                      gs.cancel_producer(self.pid, subscription.tag, reason))

    def handle_events(self, events: list[Any], subscription: Subscription) -> Any:
        """Handle a batch of events (a plain method or a coroutine). The default drops them."""

    def on_cancel(self, subscription: Subscription, reason: Any) -> Any:
        """Called when a subscription ended, before the ``cancel`` mode applies."""

    # -- the protocol ------------------------------------------------------------------------

    async def run(self) -> Any:
        receive = self.receive
        handle_events = self.handle_events
        events_async = inspect.iscoroutinefunction(handle_events)
        subscriptions = self.subscriptions
        while True:
            message = await receive()
            parsed = gs.split_from(message, gs.GEN_CONSUMER)
            if parsed is not None:
                pid, tag, payload = parsed
                try:
                    subscription = subscriptions.get(tag)
                except TypeError:
                    subscription = None
                if type(payload) is Charlist:  # a list of small integers, sent compactly
                    payload = list(payload.data)
                if type(payload) is list:
                    if subscription is None:
                        self.send(pid, gs.cancel_producer(self.pid, tag,
                                                          gs.UNKNOWN_SUBSCRIPTION))
                        continue
                    if not self._from_producer(subscription, pid):
                        continue
                    count = len(payload)
                    pending = subscription.pending - count
                    if pending < 0:
                        if not subscription.exceeded:
                            self._protocol_log.log(
                                "%r: %s sent %d events beyond the demand (%s; further excess "
                                "is counted, not logged)", self, loggable(pid), -pending,
                                "dropped" if self.drop_excess else "handled")
                        subscription.exceeded -= pending
                        if self.drop_excess:
                            del payload[count + pending:]
                            count = len(payload)
                        pending = 0
                    subscription.pending = pending
                    subscription.received += count
                    if subscription.manual:
                        result = handle_events(payload, subscription)
                        if events_async:
                            await result
                        continue
                    # As GenStage: batches of at most max - min events, and after each, once
                    # what is asked and not yet handled falls to min, ask up to max again.
                    options = subscription.options
                    low = options.low
                    step = max(options.max_demand - low, 1)
                    for start in range(0, count, step):
                        batch = payload if count <= step else payload[start:start + step]
                        result = handle_events(batch, subscription)
                        if events_async:
                            await result
                        waiting = subscription.pending + count - start - len(batch)
                        if waiting <= low:
                            self.ask(subscription, options.max_demand - waiting)
                    continue
                if (type(payload) is tuple and len(payload) == 2 and payload[0] is gs.CANCEL):
                    if subscription is not None and self._from_producer(subscription, pid):
                        await self._ended(subscription, payload[1], monitored=True)
                    continue
                self._protocol_log.log("%r: unknown message from %s: %s", self,
                                       loggable(pid), loggable(payload))
                continue
            if type(message) is tuple and len(message) == 5 and message[0] is DOWN:
                subscription = subscriptions.get(message[1])
                if subscription is not None:
                    await self._ended(subscription, message[4], monitored=False)
                    continue
            if gs.tagged(message, gs.GEN_CONSUMER):
                self._protocol_log.log("%r: malformed message ignored: %s", self,
                                       loggable(message))
                continue
            result = self.handle_info(message)
            if inspect.isawaitable(result):
                await result

    def _from_producer(self, subscription: Subscription, pid: Pid) -> bool:
        """Whether ``pid`` speaks for the subscription's producer (and, the first time a
        producer asked by name answers, learn its pid)."""
        known = subscription.pid
        if known is None and pid.node is subscription.node:
            subscription.pid = pid
            return True
        if pid == known:
            return True
        self._protocol_log.log("%r: %s is not the producer of the subscription to %s; its "
                               "message is ignored", self, loggable(pid),
                               loggable(subscription.producer))
        return False

    async def _ended(self, subscription: Subscription, reason: Any, *, monitored: bool) -> None:
        del self.subscriptions[subscription.tag]
        if monitored:
            self.demonitor(subscription.tag)
        log.debug("%r: subscription to %s ended: %s", self, loggable(subscription.producer),
                  loggable(reason))
        result = self.on_cancel(subscription, reason)
        if inspect.isawaitable(result):
            await result
        if gs.exits_on(subscription.options.cancel, reason):
            raise Exit(reason)
