"""Log lines that a flood cannot multiply: the first few of a kind each second, then one line
with how many more there were."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any


class Throttle:
    """Logs at most ``burst`` lines of one kind per ``interval`` seconds through ``logger``,
    and at the end of an interval that had more, one line saying how many were left out. For
    what a peer can repeat at will: garbage connections, refused connections, failed
    handshakes."""

    def __init__(self, logger: logging.Logger, level: int, what: str, *, burst: int = 5,
                 interval: float = 1.0) -> None:
        self.logger = logger
        self.level = level
        self.what = what
        self.burst = burst
        self.interval = interval
        self._window_start = float("-inf")
        self._logged = 0
        self.suppressed = 0
        """Lines left out in the current interval (reported when it ends)."""
        self._report_on: asyncio.AbstractEventLoop | None = None  # the loop due to report

    def log(self, message: str, *args: Any, exc_info: bool = False) -> None:
        """Log ``message % args`` (with the exception being handled if ``exc_info``), unless
        this interval's burst is spent (then count it)."""
        now = time.monotonic()
        if now - self._window_start >= self.interval:
            self._report()
            self._window_start = now
            self._logged = 0
        if self._logged < self.burst:
            self._logged += 1
            self.logger.log(self.level, message, *args, exc_info=exc_info)
            return
        self.suppressed += 1
        # The report is scheduled on the running loop, again if the loop it was scheduled on
        # ended before the interval did (a module's throttle outlives loops: one per run).
        loop = _running_loop()
        if loop is not None and self._report_on is not loop:
            self._report_on = loop
            loop.call_later(self._window_start + self.interval - now, self._report)

    def _report(self) -> None:
        self._report_on = None
        if self.suppressed:
            self.logger.log(self.level, "%d more %s in %gs were not logged", self.suppressed,
                            self.what, self.interval)
            self.suppressed = 0


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # no loop: the next line reports them
        return None
