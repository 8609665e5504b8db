"""The pipeline producer that subscribes to GenStage producers (on BEAM nodes or Python ones)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from types import MappingProxyType
from typing import Any

from pybroadway._throttle import Throttle
from pybroadway.erldist import Node
from pybroadway.erldist.stages import ConsumerStage, SubscribeOptions, Subscription
from pybroadway.erldist.supervisor import ChildSpec
from pybroadway.errors import ArgumentError, StateError
from pybroadway.pipeline import Message, Producer
from pybroadway.term import Atom, Pid, loggable
from pybroadway.term.atoms import SHUTDOWN

logger = logging.getLogger("pybroadway.gen_stage")

SubscribeTo = Sequence[Any]
"""``(name, node)``, ``(name, node, {"max_demand": …, "min_demand": …})``, or a Pid (with
options: ``(pid, {...})``)."""


class Source:
    """One producer to subscribe to, and the state of its current subscription: ``credit`` is
    what was asked and not yet taken by the processors (in flight plus buffered); ``since``
    when its first events came (None before); ``attempts`` those made since the last one
    that lasted."""

    __slots__ = ("attempts", "back", "credit", "metadata", "name", "node", "options", "since",
                 "subscription", "target", "timer")

    def __init__(self, target: Any, options: SubscribeOptions) -> None:
        self.target = target
        self.options = options
        if type(target) is Pid:
            self.name, self.node = None, target.node
        else:
            self.name, self.node = target
        self.subscription: Subscription | None = None
        self.credit = 0
        self.attempts = 0
        self.since: float | None = None
        self.back = False  # said to be back since the outage began
        self.metadata: Mapping[str, Any] = MappingProxyType({})
        self.timer: asyncio.TimerHandle | None = None

    def __str__(self) -> str:
        return f"{self.name} on {self.node}" if self.name is not None else str(self.target)


def parse_source(entry: Any) -> Source:
    """One ``subscribe_to`` entry (see :data:`SubscribeTo`)."""
    if type(entry) is Pid:
        return Source(entry, SubscribeOptions())
    items = list(entry)
    options: dict[str, Any] = {}
    if items and isinstance(items[-1], Mapping):
        options = dict(items.pop())
    if len(items) == 1 and type(items[0]) is Pid:
        target: Any = items[0]
    elif len(items) == 2:
        name, node = items
        target = (Atom(name) if isinstance(name, str) else name,
                  Atom(node) if isinstance(node, str) else node)
    else:
        raise ArgumentError(f"subscribe_to wants (name, node[, options]) or a pid, not {entry!r}")
    unknown = set(options) - {"max_demand", "min_demand", "partition"}
    if unknown:
        raise ArgumentError(f"unknown subscription options {sorted(unknown)} in {entry!r}: "
                            f"max_demand, min_demand and partition are known")
    return Source(target, SubscribeOptions(options.get("max_demand", 1000),
                                           options.get("min_demand"), "temporary",
                                           options.get("partition")))


class _Subscriber(ConsumerStage):
    """The process that holds the subscriptions and hands their events to the producer."""

    def __init__(self, producer: GenStageProducer) -> None:
        super().__init__(drop_excess=True)
        self.producer = producer

    def handle_events(self, events: list[Any], subscription: Subscription) -> None:
        self.producer._arrived(subscription, events)

    def on_cancel(self, subscription: Subscription, reason: Any) -> None:
        self.producer._ended(subscription, reason)


MessagesFrom = Callable[[list[Any], Mapping[str, Any]], list[Message]]
"""How a batch of events becomes messages, given the subscription's metadata."""


class GenStageProducer(Producer):
    """A pipeline producer fed by GenStage producers:
    ``producer={"module": (GenStageProducer, {"node": node, "subscribe_to": [...]})}``.

    Each entry of ``subscribe_to`` is ``(name, node)`` or ``(name, node, {"max_demand": 1000,
    "min_demand": 500})`` (a producer registered as ``name`` on ``node``, Elixir or Python;
    ``"partition": p`` too for one with a partition dispatcher), or a pid. The producer
    subscribes to each one from a process under the node's supervisor (cancel mode temporary)
    and asks ``max_demand`` events; it asks again, as many as the processors took, whenever
    fewer than ``min_demand`` are asked-for and not yet taken. So
    what the pipeline takes is what flows, at most ``max_demand`` events per subscription are
    held here, and nothing arrives that was not asked for: lossless by construction.

    A subscription that ends (the producer cancels it, exits, restarts, or its node goes
    down) is logged and made again after ``resubscribe_interval`` seconds, doubling on each
    attempt up to ``max_backoff``, until a subscription lasts: ends ``max_backoff`` seconds or
    more after its first events (one that ends sooner, even after events, counts as failed;
    what a producer can make us log goes through a throttle). Events of an ended subscription
    already here are still handled; none is handled twice within one subscription. Events
    beyond the demand (a producer's error) are dropped, counted in the subscription's
    ``exceeded`` and logged once: they are never asked for again and never held.

    Each message's ``metadata`` is ``{"producer": pid, "node": node, "name": name}`` (shared,
    read-only, per subscription). GenStage has no acknowledgement: messages carry the no-op
    acknowledger. ``messages(events, metadata)``, if given, makes the messages of a batch of
    events instead (one call per batch: what a transformer does per event, without building
    each message twice). On stop, the subscriptions are cancelled (reason ``shutdown``) and the
    events already sent are waited for (at most ``drain_timeout`` seconds) and handled.
    """

    mode = "pull"
    notify_taken = True

    def __init__(self, *, node: Node, subscribe_to: Iterable[Any],
                 resubscribe_interval: float = 0.1, max_backoff: float = 5.0,
                 drain_timeout: float = 5.0, buffer_size: int | None = None,
                 messages: MessagesFrom | None = None) -> None:
        super().__init__(buffer_size=buffer_size)
        self.node = node
        self.messages_from = messages
        self.sources = [parse_source(entry) for entry in subscribe_to]
        if not self.sources:
            raise ArgumentError("subscribe_to names no producer")
        self.resubscribe_interval = resubscribe_interval
        self.max_backoff = max_backoff
        self.drain_timeout = drain_timeout
        self.subscriber = _Subscriber(self)
        self._by_subscription: dict[Any, Source] = {}
        self._origin: deque[list[Any]] = deque()  # [subscription, events not yet taken]
        self._stopping = False
        self._all_ended: asyncio.Event | None = None
        self._spec: ChildSpec | None = None
        self.subscriptions_made = 0
        self._warnings = Throttle(logger, logging.WARNING, "subscription warnings")
        self._notes = Throttle(logger, logging.INFO, "subscription notes")

    # -- lifecycle ---------------------------------------------------------------------------

    async def on_start(self) -> None:
        supervisor = self.node.supervisor
        if supervisor is None:
            raise StateError(f"start {self.node} before the pipeline that uses it")
        self._spec = ChildSpec(id=f"gen_stage subscriber {self.name} {id(self)}",
                               start=self._new_subscriber, on_start=self._subscriber_started)
        await supervisor.start_child(self._spec)

    def _new_subscriber(self) -> _Subscriber:
        if self.subscriber.alive or self.subscriber.exit_reason is not None:
            self.subscriber = _Subscriber(self)  # a restart
        return self.subscriber

    def _subscriber_started(self, process: Any) -> None:
        self._by_subscription.clear()
        for source in self.sources:
            source.subscription = None
            self._subscribe(source)

    async def prepare_for_draining(self) -> None:
        """Cancel every subscription and wait (``drain_timeout``) for the producers to
        confirm: the events they sent before that are handled."""
        self._stopping = True
        for source in self.sources:
            if source.timer is not None:
                source.timer.cancel()
                source.timer = None
            if source.subscription is not None and self.subscriber.alive:
                self.subscriber.cancel(source.subscription, SHUTDOWN)
        self._all_ended = asyncio.Event()
        if not self._by_subscription or not self.subscriber.alive:
            return
        try:
            async with asyncio.timeout(self.drain_timeout):
                await self._all_ended.wait()
        except TimeoutError:
            logger.warning("%s: %d producers did not confirm the cancel within %ss", self.name,
                           len(self._by_subscription), self.drain_timeout)

    async def on_stop(self) -> None:
        supervisor = self.node.supervisor
        if self._spec is not None and supervisor is not None and supervisor.alive:
            with contextlib.suppress(KeyError):
                await supervisor.terminate_child(self._spec.id)

    # -- subscriptions -----------------------------------------------------------------------

    def _subscribe(self, source: Source) -> None:
        source.timer = None
        if self._stopping or not self.subscriber.alive:
            return
        options = source.options
        subscription = self.subscriber.subscribe(
            source.target, max_demand=options.max_demand, min_demand=options.min_demand,
            cancel="temporary", partition=options.partition, manual=True)
        self.subscriptions_made += 1
        source.subscription = subscription
        self._by_subscription[subscription.tag] = source
        source.metadata = MappingProxyType({"producer": source.target, "node": source.node,
                                            "name": source.name})
        source.credit = options.max_demand
        source.since = None
        self.subscriber.ask(subscription, options.max_demand)
        # Said once; while the producer stays away, the attempts go to the debug log only.
        if source.attempts:
            logger.debug("%s: subscribing to %s again", self.name, source)
        else:
            self._notes.log("%s: subscribing to %s (max_demand %d, min_demand %d)", self.name,
                            source, options.max_demand, options.low)

    def _ended(self, subscription: Subscription, reason: Any) -> None:
        source = self._by_subscription.pop(subscription.tag, None)
        if source is None:
            return
        if source.subscription is subscription:
            source.subscription = None
        if self._stopping:
            logger.info("%s: subscription to %s ended: %s", self.name, source,
                        loggable(reason))
            if not self._by_subscription and self._all_ended is not None:
                self._all_ended.set()
            return
        if source.since is not None and time.monotonic() - source.since >= self.max_backoff:
            source.attempts = 0  # it lasted: this is a new outage, not the same one
        delay = min(self.max_backoff, self.resubscribe_interval * 2 ** source.attempts)
        if source.attempts:
            logger.debug("%s: subscription to %s ended: %s; subscribing again in %.1fs",
                         self.name, source, loggable(reason), delay)
        else:
            source.back = False
            self._warnings.log("%s: subscription to %s ended: %s; subscribing again in "
                               "%.1fs (and again, up to every %gs, until one lasts)",
                               self.name, source, loggable(reason), delay, self.max_backoff)
        source.attempts += 1
        source.timer = asyncio.get_running_loop().call_later(delay, self._subscribe, source)

    # -- events ------------------------------------------------------------------------------

    def _arrived(self, subscription: Subscription, events: list[Any]) -> None:
        source = self._by_subscription.get(subscription.tag)
        if source is None:  # ended already: still handled, never asked again
            metadata: Mapping[str, Any] = MappingProxyType({})
        else:
            if source.since is None:
                source.since = time.monotonic()
            if source.attempts and not source.back:
                source.back = True
                self._notes.log("%s: %s is back (after %d attempt%s)", self.name, source,
                                source.attempts, "" if source.attempts == 1 else "s")
            metadata = source.metadata
            if metadata["producer"] is not subscription.pid:
                metadata = source.metadata = MappingProxyType(
                    {"producer": subscription.pid, "node": source.node, "name": source.name})
        self._origin.append([subscription, len(events)])
        build = self.messages_from
        self.push_messages(build(events, metadata) if build is not None
                           else list(map(Message, events, repeat(metadata))))

    def on_taken(self, count: int) -> None:
        """Processors took ``count`` messages: credit their subscriptions, ask again."""
        origin = self._origin
        while count and origin:
            entry = origin[0]
            taken = entry[1] if entry[1] <= count else count
            count -= taken
            entry[1] -= taken
            if not entry[1]:
                origin.popleft()
            subscription: Subscription = entry[0]
            source = self._by_subscription.get(subscription.tag)
            if source is None or source.subscription is not subscription or self._stopping:
                continue
            source.credit -= taken
            options = source.options
            if source.credit <= options.low:
                self.subscriber.ask(subscription, options.max_demand - source.credit)
                source.credit = options.max_demand

    def handle_demand(self, demand: int) -> None:
        """Demand flows through :meth:`on_taken`: every subscription already has
        ``max_demand`` asked for, beyond what the buffer holds."""
