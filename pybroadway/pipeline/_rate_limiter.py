"""The rate limiter the producers of one pipeline share (the ``rate_limiting`` option)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class RateLimiter:
    """Allows ``allowed_messages`` messages per ``interval`` milliseconds to all producers.

    Producers :meth:`take` their share before handing messages to processors. At the end of
    each interval the allowance is refilled and ``on_refill`` is called, so that the producers
    serve the processors that waited. Changes to ``allowed_messages`` and ``interval`` take
    effect from the next interval.
    """

    def __init__(self, allowed_messages: int, interval: int,
                 on_refill: Callable[[], None]) -> None:
        self.allowed_messages = allowed_messages
        self.interval = interval
        self.left = allowed_messages
        self._on_refill = on_refill
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start counting intervals (in the running event loop)."""
        self._timer = asyncio.get_running_loop().call_later(self.interval / 1000, self._refill)

    def stop(self) -> None:
        """Stop refilling."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def take(self, wanted: int) -> int:
        """Take up to ``wanted`` messages from this interval's allowance; return how many."""
        granted = wanted if wanted <= self.left else self.left
        self.left -= granted
        return granted

    def _refill(self) -> None:
        self.left = self.allowed_messages
        self.start()
        self._on_refill()
