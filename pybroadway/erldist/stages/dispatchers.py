"""Dispatchers: on a producer, which subscription gets which events (GenStage's three).

- :class:`DemandDispatcher` (the default): each batch goes to the subscription with the most
  pending demand;
- :class:`BroadcastDispatcher`: every subscription gets every event, at the pace of the one
  with the least demand;
- :class:`PartitionDispatcher`: each event goes to one partition (``hash(event)``), each
  partition to the one consumer that named it with ``partition:`` when it subscribed.

A dispatcher holds the producer's buffer (events no subscription has asked for yet), so that
a partition dispatcher can keep one per partition. It never sends more events on a
subscription than that subscription asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from pybroadway._fifo import ChunkedFifo
from pybroadway.errors import ArgumentError
from pybroadway.term import Atom, Pid

Send = Callable[["Subscriber", list[Any]], None]


class Subscriber:
    """One subscription, on the producer's side: the consumer's pid, the tag, the demand it
    has asked for and not yet received, and its partition (partition dispatcher only)."""

    __slots__ = ("demand", "monitor", "options", "partition", "pid", "tag")

    def __init__(self, pid: Pid, tag: Any, options: dict[str, Any]) -> None:
        self.pid = pid
        self.tag = tag
        self.options = options
        self.demand = 0
        self.partition: Any = None
        self.monitor: Any = None

    def __repr__(self) -> str:
        return f"<Subscriber {self.pid!r} demand={self.demand}>"


class Dispatcher:
    """The interface the producer stage drives; subclasses decide who gets what."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []

    @property
    def buffered(self) -> int:
        """Events held, not yet sent."""
        raise NotImplementedError

    def subscribe(self, subscriber: Subscriber) -> Any:
        """Take a new subscription; return None, or the reason to cancel it at once."""
        self.subscribers.append(subscriber)
        return None

    def cancel(self, subscriber: Subscriber) -> None:
        self.subscribers.remove(subscriber)

    def ask(self, subscriber: Subscriber, demand: int) -> None:
        subscriber.demand += demand

    def put(self, events: list[Any]) -> None:
        """Buffer events (in order); :meth:`dispatch` sends what the demand allows."""
        raise NotImplementedError

    def dispatch(self, send: Send) -> None:
        """Send buffered events as far as the subscriptions' demand allows."""
        raise NotImplementedError

    def drop_oldest(self, count: int) -> int:
        """Discard up to ``count`` of the oldest buffered events; return how many."""
        raise NotImplementedError


class DemandDispatcher(Dispatcher):
    """Each batch to the subscription with the most pending demand (GenStage's default)."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer: ChunkedFifo[Any] = ChunkedFifo()

    @property
    def buffered(self) -> int:
        return self.buffer.size

    def put(self, events: list[Any]) -> None:
        self.buffer.put(events)

    def dispatch(self, send: Send) -> None:
        buffer = self.buffer
        subscribers = self.subscribers
        while buffer.size and subscribers:
            best = subscribers[0] if len(subscribers) == 1 else max(
                subscribers, key=_demand_of)
            demand = best.demand
            if not demand:
                return
            batch = buffer.take(demand)
            best.demand = demand - len(batch)
            send(best, batch)

    def drop_oldest(self, count: int) -> int:
        return len(self.buffer.take(count))


def _demand_of(subscriber: Subscriber) -> int:
    return subscriber.demand


class BroadcastDispatcher(DemandDispatcher):
    """Every subscription gets every event, as fast as the one with the least demand allows.
    A new subscription gets the events buffered from then on."""

    def dispatch(self, send: Send) -> None:
        subscribers = self.subscribers
        if not subscribers or not self.buffer.size:
            return
        count = min(subscriber.demand for subscriber in subscribers)
        if not count:
            return
        batch = self.buffer.take(count)
        count = len(batch)
        for subscriber in subscribers:
            subscriber.demand -= count
            send(subscriber, batch)


class PartitionDispatcher(Dispatcher):
    """``partitions``: a count (named 0..n-1) or the partitions' names. ``hash(event)`` gives
    an event's partition (default: Python's ``hash(event) % n`` over the names' order), or
    None to discard the event. A consumer subscribes with ``partition: name``; one consumer per
    partition. Events of a partition nobody took wait in that partition's buffer."""

    def __init__(self, partitions: int | Iterable[Hashable],
                 hash: Callable[[Any], Any] | None = None) -> None:
        super().__init__()
        names = list(range(partitions)) if isinstance(partitions, int) else list(partitions)
        if not names:
            raise ArgumentError("a partition dispatcher needs at least one partition")
        self.names = names
        self.buffers: dict[Any, ChunkedFifo[Any]] = {name: ChunkedFifo() for name in names}
        self.owners: dict[Any, Subscriber] = {}
        if hash is None:
            count = len(names)

            def hash(event: Any) -> Any:
                return names[_builtin_hash(event) % count]
        self.hash = hash
        self.discarded = 0

    @property
    def buffered(self) -> int:
        return sum(buffer.size for buffer in self.buffers.values())

    def subscribe(self, subscriber: Subscriber) -> Any:
        partition = subscriber.options.get("partition")
        if isinstance(partition, Atom) and partition not in self.buffers \
                and partition.name in self.buffers:
            partition = partition.name  # an Elixir atom for a partition named by a str
        elif isinstance(partition, bytes) and partition not in self.buffers:
            partition = partition.decode(errors="replace")  # a str arrives as a binary
        try:
            known = partition in self.buffers
        except TypeError:  # an unhashable term
            known = False
        if not known:
            return ("partition", partition, "not one of", self.names)
        if partition in self.owners:
            return ("partition", partition, "already has a consumer")
        subscriber.partition = partition
        self.owners[partition] = subscriber
        return super().subscribe(subscriber)

    def cancel(self, subscriber: Subscriber) -> None:
        super().cancel(subscriber)
        if self.owners.get(subscriber.partition) is subscriber:
            del self.owners[subscriber.partition]

    def put(self, events: list[Any]) -> None:
        hash_ = self.hash
        routed: dict[Any, list[Any]] = {}
        for event in events:
            partition = hash_(event)
            if partition is None:
                self.discarded += 1
                continue
            batch = routed.get(partition)
            if batch is None:
                if partition not in self.buffers:
                    raise ArgumentError(f"hash gave {partition!r}, not one of {self.names}")
                batch = routed[partition] = []
            batch.append(event)
        for partition, batch in routed.items():
            self.buffers[partition].put(batch)

    def dispatch(self, send: Send) -> None:
        for partition, subscriber in self.owners.items():
            buffer = self.buffers[partition]
            if subscriber.demand and buffer.size:
                batch = buffer.take(subscriber.demand)
                subscriber.demand -= len(batch)
                send(subscriber, batch)

    def drop_oldest(self, count: int) -> int:
        dropped = 0
        while dropped < count:
            fullest = max(self.buffers.values(), key=_size_of)
            if not fullest.size:
                break
            dropped += len(fullest.take(min(count - dropped, fullest.size)))
        return dropped


def _size_of(buffer: ChunkedFifo[Any]) -> int:
    return buffer.size


_builtin_hash = hash
