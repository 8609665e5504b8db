"""A FIFO for the hot paths that move items in lists (the pipeline's producers, GenStage's
dispatchers): it keeps the lists as they came, so taking n items is a slice or two, not n
pops."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class ChunkedFifo(Generic[T]):
    """Items in order, kept as the lists they were put in. A list given to :meth:`put` belongs
    to the FIFO from then on; what :meth:`take` returns belongs to the caller."""

    __slots__ = ("chunks", "offset", "size")

    def __init__(self) -> None:
        self.chunks: deque[list[T]] = deque()
        self.offset = 0  # items of chunks[0] already taken
        self.size = 0

    def put(self, items: list[T]) -> None:
        """Add ``items`` (in order) after what is there."""
        if items:
            self.chunks.append(items)
            self.size += len(items)

    def take(self, n: int) -> list[T]:
        """Remove and return the first ``n`` items (at most :attr:`size`)."""
        chunks = self.chunks
        out: list[T] = []
        owned = False  # out is a list of our own making, which may be extended in place
        while n > 0 and chunks:
            head = chunks[0]
            offset = self.offset
            if len(head) - offset <= n:
                chunks.popleft()
                self.offset = 0
                part = head[offset:] if offset else head
            else:
                part = head[offset:offset + n]
                self.offset = offset + n
            n -= len(part)
            if not out:
                out, owned = part, part is not head
            elif owned:
                out += part
            else:
                out, owned = out + part, True
        self.size -= len(out)
        return out
