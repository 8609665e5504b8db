"""The front of a pipeline whose processors run elsewhere (``workers={...}``).

The producers stay here; in the processors' place stands one :class:`RemoteConsumer` per
partition. It takes messages from the producers with the same demand protocol, gives each an
id, keeps it in the in-flight table (id → message) and hands ``(id, message)`` pairs to the
:class:`Offload`, the transport to the workers (``pybroadway.workers`` implements it). The
outcomes come back by id; the messages are acknowledged here, where they came from, and the
demand they held is asked of the producers again. So what is in flight is bounded by the
window each consumer asks (``workers["max_in_flight"]``), a slow worker is given less (the
transport's business), and an outcome for an id no longer in flight is ignored: a message is
acknowledged once.

The pipeline layer knows nothing of the transport: :func:`register_offload` is how one makes
itself known (``import pybroadway.workers`` does it).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

from pybroadway.errors import StateError

from ._message import Message

if TYPE_CHECKING:
    from ._producer import Producer
    from ._topology import Topology

logger = logging.getLogger("pybroadway.pipeline")

Entry = tuple[int, Message]
"""An in-flight message and the id the front gave it."""

Slot = tuple["RemoteConsumer", "Producer"]
"""Where an in-flight message came from and is credited back to."""

_message = itemgetter(0)
_slot = itemgetter(1)


class Offload(Protocol):
    """A transport to workers, as the front needs it."""

    async def start(self, front: RemoteFront) -> None:
        """Start the workers (or wait for them to join)."""

    def send(self, partition: int, entries: list[Entry]) -> None:
        """Hand messages to the workers; ``front.complete`` / ``front.lost`` come later."""

    async def stop(self) -> None:
        """Stop the workers (everything in flight came back, or was given up)."""

    def stats(self) -> list[dict[str, Any]]:
        """One entry per worker: node, handled, failed, in_flight, rate."""

    async def failed(self) -> str:
        """Return (why) once the workers cannot be kept running: the pipeline must stop."""


OffloadFactory = Callable[[dict[str, Any], str, int], Offload]
"""``factory(workers options, pipeline name, partitions)`` → a new :class:`Offload`."""

_factories: list[OffloadFactory] = []


def register_offload(factory: OffloadFactory) -> None:
    """Make ``factory`` the transport of pipelines given ``workers={...}``."""
    _factories[:] = [factory]


def make_offload(options: dict[str, Any], name: str, partitions: int) -> Offload:
    if not _factories:
        raise StateError("workers={...} needs the workers connector: import pybroadway.workers "
                         "before starting the pipeline")
    return _factories[0](options, name, partitions)


class RemoteConsumer:
    """Stands for the processors of one partition: asks each producer for ``window``
    messages, and again for as many as came back once half the window is free."""

    __slots__ = ("_front", "completed", "partition", "slots")

    def __init__(self, front: RemoteFront, partition: int) -> None:
        self._front = front
        self.partition = partition
        self.completed: dict[Producer, int] = {}
        self.slots: dict[Producer, Slot] = {}  # one tuple per producer, shared by its messages

    def deliver(self, producer: Producer, messages: list[Message]) -> None:
        self._front._take(self, producer, messages)

    def wake(self) -> None:
        self._front._check_drained()


class RemoteFront:
    """The in-flight table and the consumers standing for the processors."""

    def __init__(self, topology: Topology, options: dict[str, Any]) -> None:
        self._topology = topology
        self.options = options
        self.window: int = options["max_in_flight"]
        self.consumers = [RemoteConsumer(self, index) for index in range(topology.partitions)]
        self.in_flight: dict[int, tuple[Message, Slot]] = {}
        self._next_id = 1
        self.offload = make_offload(options, topology.name, topology.partitions)
        self._drained: asyncio.Event | None = None
        self.redelivered = 0

    async def start(self) -> None:
        await self.offload.start(self)
        for consumer in self.consumers:
            for producer in self._topology.producers:
                consumer.completed[producer] = 0
                consumer.slots[producer] = (consumer, producer)
                producer._ask(consumer, self.window)

    def _take(self, consumer: RemoteConsumer, producer: Producer, messages: list[Message]
              ) -> None:
        # Per chunk, not per message: ids are a range, the table is filled in C.
        start = self._next_id
        self._next_id = start + len(messages)
        keys = range(start, self._next_id)
        slots = repeat(consumer.slots[producer], len(messages))
        self.in_flight.update(zip(keys, zip(messages, slots, strict=True), strict=True))
        self.offload.send(consumer.partition, list(zip(keys, messages, strict=True)))

    def complete(self, ok: Iterable[int], failed: Iterable[tuple[int, Any]]) -> None:
        """Outcomes by id: acknowledge, and ask again. Unknown ids are ignored."""
        in_flight = self.in_flight
        popped: list[Any] = list(map(in_flight.pop, ok, repeat(None)))
        found = popped if None not in popped else [
            entry for entry in popped if entry is not None]
        successful = list(map(_message, found))
        done = list(map(_slot, found))
        failures: list[Message] = []
        for key, status in failed:
            entry = in_flight.pop(key, None)
            if entry is not None:
                entry[0].status = status
                failures.append(entry[0])
                done.append(entry[1])
        if successful or failures:
            self._topology.ack(successful, failures)
        self._credit(done)

    def lost(self, ids: Iterable[int], reason: Any) -> None:
        """A worker went away holding ``ids``: acknowledge them as failed with ``reason``."""
        self.complete((), [(key, ("failed", reason)) for key in ids])

    def entries(self, ids: Iterable[int]) -> list[Entry]:
        """The messages still in flight among ``ids`` (for redelivery)."""
        in_flight = self.in_flight
        found = [(key, in_flight[key][0]) for key in ids if key in in_flight]
        self.redelivered += len(found)
        return found

    def _credit(self, done: list[Slot]) -> None:
        low = self.window // 2
        # Usually all from one producer and partition (counted in C, identity first).
        runs = ({done[0]: len(done)} if done and done.count(done[0]) == len(done)
                else Counter(done))
        for (consumer, producer), came_back in runs.items():
            count = consumer.completed[producer] + came_back
            if count >= low or producer._draining:
                consumer.completed[producer] = 0
                producer._ask(consumer, count)
            else:
                consumer.completed[producer] = count
        self._check_drained()

    def _check_drained(self) -> None:
        if self._drained is None or self.in_flight:
            return
        if all(producer._drained_for(consumer) for consumer in self.consumers
               for producer in self._topology.producers):
            self._drained.set()

    async def drain(self) -> None:
        """Return once the producers are drained and nothing is in flight."""
        self._drained = asyncio.Event()
        self._check_drained()
        await self._drained.wait()

    def abandon(self, reason: Any) -> None:
        """Shutdown timed out: what is still in flight is acknowledged as failed."""
        self.lost(list(self.in_flight), reason)
