"""The batchers: group the messages processors hand them into batches by batch key."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from ._message import BatchInfo, Message
from ._partition import partition


class BatchStage:
    """Accumulates one batcher's (or one batcher partition's) messages into batches by key.

    Batches are emitted when full (``"size"``), when their ``batch_timeout`` passes
    (``"timeout"``) or on a message in flush mode (``"flush"``); they wait in ``ready`` for
    the batch processors. While ``2 * workers`` batches are ready, ``room`` is cleared.
    Counters: messages ``received``; ``batches`` handled, with their ``successful`` and
    ``failed`` messages, and ``busy``, the seconds spent handling them (counted by the batch
    processors).
    """

    def __init__(self, name: Any, partition: int | None, options: dict[str, Any],
                 workers: int) -> None:
        self.name = name
        self.partition = partition
        self.batch_size: int = options["batch_size"]
        self.batch_timeout: float = options["batch_timeout"] / 1000
        self.pending: dict[Any, list[Message]] = {}
        self.timers: dict[Any, asyncio.TimerHandle] = {}
        self.ready: deque[tuple[list[Message], BatchInfo]] = deque()
        self.limit = 2 * workers
        self.has_work = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.closed = False
        self.current: dict[int, list[Message]] = {}
        self.received = self.batches = self.successful = self.failed = 0
        self.busy = 0.0
        self._loop = asyncio.get_running_loop()

    def add(self, messages: list[Message]) -> None:
        self.received += len(messages)
        pending = self.pending
        size = self.batch_size
        for message in messages:
            key = message.batch_key
            batch = pending.get(key)
            if batch is None:
                batch = pending[key] = []
                self.timers[key] = self._loop.call_later(self.batch_timeout, self._timeout, key)
            batch.append(message)
            if len(batch) >= size:
                self._emit(key, "size")
            elif message.batch_mode == "flush":
                self._emit(key, "flush")

    def _timeout(self, key: Any) -> None:
        if key in self.pending:
            self._emit(key, "timeout")

    def _emit(self, key: Any, trigger: Any) -> None:
        batch = self.pending.pop(key)
        self.timers.pop(key).cancel()
        self.ready.append((batch, BatchInfo(self.name, key, self.partition, len(batch), trigger)))
        self.has_work.set()
        if len(self.ready) >= self.limit:
            self.room.clear()

    def take(self) -> tuple[list[Message], BatchInfo] | None:
        """The next ready batch, or None (then ``has_work`` is cleared)."""
        if not self.ready:
            self.has_work.clear()
            return None
        batch = self.ready.popleft()
        if len(self.ready) < self.limit:
            self.room.set()
        return batch

    def close(self) -> None:
        """Flush every pending batch; workers stop once the ready batches are handled."""
        for key in list(self.pending):
            self._emit(key, "flush")
        self.closed = True
        self.has_work.set()

    def take_batched(self) -> list[Message]:
        """Empty the stage of what waits in it (the batcher crashed): pending and ready
        batches, not those the batch processors are handling; return those messages."""
        leftovers = [m for batch in self.pending.values() for m in batch]
        leftovers += [m for batch, _ in self.ready for m in batch]
        for timer in self.timers.values():
            timer.cancel()
        self.pending.clear()
        self.timers.clear()
        self.ready.clear()
        self.room.set()
        return leftovers

    def take_everything(self) -> list[Message]:
        """Empty the stage (shutdown timed out); return every message it held."""
        leftovers = self.take_batched()
        leftovers += [m for batch in self.current.values() for m in batch]
        self.current.clear()
        return leftovers


class Batcher:
    """A named batcher: one stage, or one stage per partition when partition_by is set."""

    def __init__(self, name: Any, options: dict[str, Any],
                 partition_by: Callable[[Message], int] | None) -> None:
        self.name = name
        self.options = options
        self.partition_by = partition_by
        concurrency = options["concurrency"]
        if partition_by is None:
            self.stages = [BatchStage(name, None, options, concurrency)]
        else:
            self.stages = [BatchStage(name, i, options, 1) for i in range(concurrency)]

    def __repr__(self) -> str:
        return f"batcher {self.name!r}"

    def add(self, messages: list[Message]) -> list[Message]:
        """Put ``messages`` into their batches; return those ``partition_by`` could not place
        (their status says why)."""
        stages = self.stages
        if len(stages) == 1:
            stages[0].add(messages)
            return []
        routed, unroutable = partition(
            messages, cast(Callable[[Message], int], self.partition_by), len(stages))
        for stage, part in zip(stages, routed, strict=True):
            if part:
                stage.add(part)
        return unroutable

    def take_everything(self) -> list[Message]:
        """Empty the batcher (it crashed): return what waits in its batches (the batches
        its batch processors are handling are theirs)."""
        return [message for stage in self.stages for message in stage.take_batched()]

    async def wait_room(self) -> None:
        """Return once every stage has room for more batches."""
        for stage in self.stages:
            if not stage.room.is_set():
                await stage.room.wait()
