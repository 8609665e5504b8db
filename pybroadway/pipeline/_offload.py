"""Offloaded processing: a pipeline whose processors (and batchers) run elsewhere.

An offload is declared the way a producer is, ``offload=(Module, {options})``: ``Module``
validates its own options (:meth:`Offload.validate_options`) and is built at start from them
and the :class:`OffloadSetup` of the pipeline. The producers stay here; in the processors'
place stand :class:`OffloadedProcessors`, one :class:`OffloadedPartition` per partition. Each
takes messages from the producers with the same demand protocol, gives each an id, keeps it in
the in-flight table (id -> message) and hands ``(id, message)`` pairs to the offload. The
outcomes come back by id; the messages are acknowledged here, where they came from, and the
demand they held is asked of the producers again. So what is in flight is bounded by the
window each partition asks (:attr:`Offload.window`), a slow worker is given less (the
offload's business), and an outcome for an id no longer in flight is ignored: a message is
acknowledged once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

from ._message import Message
from ._outcomes import Outcomes

if TYPE_CHECKING:
    from ._producer import Producer

logger = logging.getLogger("pybroadway.pipeline")

Entry = tuple[int, Message]
"""An in-flight message and the id it was given."""

Slot = tuple["OffloadedPartition", "Producer"]
"""Where an in-flight message came from and is credited back to."""

_message = itemgetter(0)
_slot = itemgetter(1)


@dataclass(frozen=True)
class OffloadSetup:
    """What an offload is told of the pipeline it serves: its ``name``, its class
    (``pipeline_class``) and validated ``options``, its ``partitions`` (processors with
    ``partition_by``, else 1), ``concurrency`` (its processors') and its ``producers``."""

    name: str
    pipeline_class: type
    options: Mapping[str, Any]
    partitions: int
    concurrency: int
    producers: list[Producer]


class Offload(Protocol):
    """Where a pipeline's processing is offloaded to (worker processes, say). The class
    validates its options and is built from them and the pipeline's :class:`OffloadSetup`."""

    window: int
    """Messages handed over and not yet back, at most, per producer and partition."""

    @classmethod
    def validate_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` checked and completed with defaults; raises an ``OptionsError``."""

    def __init__(self, options: dict[str, Any], setup: OffloadSetup) -> None:
        """Built when the pipeline starts, from options :meth:`validate_options` returned."""

    async def start(self, processors: OffloadedProcessors) -> None:
        """Start (or wait for) whatever runs the processing."""

    def send(self, partition: int, entries: list[Entry]) -> None:
        """Hand messages over; ``processors.complete`` / ``processors.lost`` come later."""

    async def stop(self) -> None:
        """Stop (everything in flight came back, or was given up)."""

    def stats(self) -> list[dict[str, Any]]:
        """One entry per worker: node, handled, failed, in_flight, rate."""

    async def failed(self) -> str:
        """Return (why) once the processing cannot be kept running: the pipeline must stop."""

    async def roll(self, options: Mapping[str, Any]) -> None:
        """A reload: run the pipeline of ``options`` (the new version's, validated) from now
        on, replacing what runs the processing a part at a time while the rest goes on;
        raise if that cannot be done (what was replaced runs the new version)."""


class OffloadedPartition:
    """Stands for the processors of one partition: asks each producer for ``window``
    messages, and again for as many as came back once half the window is free."""

    __slots__ = ("_front", "completed", "partition", "slots")

    def __init__(self, front: OffloadedProcessors, partition: int) -> None:
        self._front = front
        self.partition = partition
        self.completed: dict[Producer, int] = {}
        self.slots: dict[Producer, Slot] = {}  # one tuple per producer, shared by its messages

    def deliver(self, producer: Producer, messages: list[Message]) -> None:
        self._front._take(self, producer, messages)

    def wake(self) -> None:
        self._front._check_drained()


class OffloadedProcessors:
    """The in-flight table and the partitions standing for the processors."""

    def __init__(self, offload: Offload, producers: list[Producer], partitions: int,
                 outcomes: Outcomes) -> None:
        self.offload = offload
        self.producers = producers
        self._outcomes = outcomes
        self.window = offload.window
        self.consumers = [OffloadedPartition(self, index) for index in range(partitions)]
        self.in_flight: dict[int, tuple[Message, Slot]] = {}
        self._next_id = 1
        self._drained: asyncio.Event | None = None
        self.redelivered = 0

    async def start(self) -> None:
        await self.offload.start(self)
        for consumer in self.consumers:
            for producer in self.producers:
                consumer.completed[producer] = 0
                consumer.slots[producer] = (consumer, producer)
                producer._ask(consumer, self.window)

    def metadata_of(self, key: int) -> Mapping[str, Any] | None:
        """The metadata of the message in flight as ``key`` as it was given (None: none, or
        no such message any more)."""
        entry = self.in_flight.get(key)
        return None if entry is None else entry[0].raw_metadata

    def waiting(self, handed: set[int]) -> dict[int, list[Entry]]:
        """The messages in flight but not in ``handed`` (what the offload handed on), by
        partition, in the order they were taken."""
        by_partition: dict[int, list[Entry]] = {}
        for key, (message, (consumer, _)) in sorted(self.in_flight.items()):
            if key not in handed:
                by_partition.setdefault(consumer.partition, []).append((key, message))
        return by_partition

    def _take(self, consumer: OffloadedPartition, producer: Producer, messages: list[Message]
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
            self._outcomes.ack(successful, failures)
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
               for producer in self.producers):
            self._drained.set()

    async def drain(self) -> None:
        """Return once the producers are drained and nothing is in flight."""
        self._drained = asyncio.Event()
        self._check_drained()
        await self._drained.wait()

    def abandon(self, reason: Any) -> None:
        """Shutdown timed out: what is still in flight is acknowledged as failed."""
        self.lost(list(self.in_flight), reason)
