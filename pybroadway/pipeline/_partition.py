"""Spreading messages over partitions with a user's ``partition_by``, as the producers (over
processor partitions) and the batchers (over batch processor partitions) both do; and the
buffer a producer keeps per partition."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from pybroadway._fifo import ChunkedFifo

from ._message import Message


class PartitionBuffer:
    """A producer's buffer for one processor partition and the consumers waiting on it."""

    __slots__ = ("buffer", "waiters")

    def __init__(self) -> None:
        self.buffer: ChunkedFifo[Message] = ChunkedFifo()
        self.waiters: deque[list[Any]] = deque()  # [consumer, demand still owed to it]


def partition(messages: list[Message], partition_by: Callable[[Message], int], count: int
              ) -> tuple[list[list[Message]], list[Message]]:
    """``messages`` in ``count`` partitions, in order; and those ``partition_by`` raised on,
    their status ``("error", exception)``."""
    routed: list[list[Message]] = [[] for _ in range(count)]
    unroutable: list[Message] = []
    for message in messages:
        try:
            routed[partition_by(message) % count].append(message)
        except Exception as error:
            message.status = ("error", error)
            unroutable.append(message)
    return routed, unroutable
