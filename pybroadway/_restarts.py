"""Restart intensity, as OTP's supervisors and Broadway count it: more than ``intensity``
restarts within ``period`` seconds means the fault is not transient. The node's
:class:`~pybroadway.erldist.supervisor.Supervisor` and the pipeline's stage supervisor both
count with it."""

from __future__ import annotations

import time
from collections import deque


class RestartIntensity:
    """The restarts of the last ``period`` seconds, at most ``intensity`` of them allowed."""

    __slots__ = ("_restarts", "intensity", "period")

    def __init__(self, intensity: int, period: float) -> None:
        self.intensity = intensity
        self.period = period
        self._restarts: deque[float] = deque()

    def allow(self) -> bool:
        """Count one restart; whether it stays within the intensity."""
        now = time.monotonic()
        restarts = self._restarts
        restarts.append(now)
        while restarts and restarts[0] < now - self.period:
            restarts.popleft()
        return len(restarts) <= self.intensity
