"""The chunked FIFO the producers and dispatchers keep their items in."""

from __future__ import annotations

from pybroadway._fifo import ChunkedFifo


def test_takes_across_chunks_in_order_and_never_touches_a_list_it_was_given() -> None:
    fifo: ChunkedFifo[int] = ChunkedFifo()
    first, second, third = [1, 2, 3], [4, 5], [6]
    for items in (first, second, third, []):
        fifo.put(items)
    assert fifo.size == 6
    assert fifo.take(2) == [1, 2]
    assert fifo.take(3) == [3, 4, 5]
    whole = fifo.take(1)
    assert whole == [6] and fifo.size == 0 and fifo.take(5) == []
    fifo.put(first)
    fifo.put(second)
    taken = fifo.take(10)  # the first list whole, then more: a new list, not first extended
    assert taken == [1, 2, 3, 4, 5]
    assert (first, second) == ([1, 2, 3], [4, 5])
