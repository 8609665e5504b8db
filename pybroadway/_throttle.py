"""Log lines that a flood cannot multiply: the first few of a kind, then one line per interval
with how many more there were."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any, TypeAlias

ExcInfo: TypeAlias = (bool | BaseException
                      | tuple[type[BaseException], BaseException, TracebackType | None])
_COUNTED = "{count} more {what} in {interval:g}s were not logged"


class Throttle:
    """Logs at most ``burst`` lines of one kind per ``interval`` seconds through ``logger``,
    and at the end of an interval that had more, one line saying how many were left out. For
    what a peer can repeat at will: garbage connections, refused connections, failed
    handshakes.

    With ``burst_each_interval=False`` the burst is given once per flood instead: after the
    first ``burst`` lines, only the count is logged, once an interval, until the kind has been
    quiet for a whole interval (for failures of one kind, whose first few lines, with their
    tracebacks, say all there is to say). ``summary`` words the count line; it is formatted
    with ``count``, ``what`` and ``interval``.
    """

    def __init__(self, logger: logging.Logger, level: int, what: str, *, burst: int = 5,
                 interval: float = 1.0, burst_each_interval: bool = True,
                 summary: str = _COUNTED) -> None:
        self.logger = logger
        self.level = level
        self.what = what
        self.burst = burst
        self.interval = interval
        self.burst_each_interval = burst_each_interval
        self.summary = summary
        self._window_start = self._last = float("-inf")
        self._logged = 0
        self.suppressed = 0
        """Lines left out in the current interval (reported when it ends)."""
        self._report_on: asyncio.AbstractEventLoop | None = None  # the loop due to report

    def log(self, message: str, *args: Any, exc_info: ExcInfo = False) -> None:
        """Log ``message % args`` (with the exception being handled if ``exc_info`` is true,
        or with the exception it is), unless the burst is spent (then count it)."""
        now = time.monotonic()
        if now - self._window_start >= self.interval:
            self.flush()
            self._window_start = now
            if self.burst_each_interval or now - self._last >= self.interval:
                self._logged = 0
        self._last = now
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
            loop.call_later(self._window_start + self.interval - now, self.flush)

    def flush(self) -> None:
        """Log the count of the lines left out so far, if any (the interval's end does it; so
        does whoever stops what logs, lest the count be lost)."""
        self._report_on = None
        if self.suppressed:
            self.logger.log(self.level, self.summary.format(
                count=self.suppressed, what=self.what, interval=self.interval))
            self.suppressed = 0


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # no loop: the next line reports them
        return None
