"""A throttled log: the first lines of an interval, then one line with how many were left
out."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pybroadway._throttle import Throttle


async def test_a_flood_logs_a_burst_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flood")
    throttle = Throttle(logging.getLogger("flood"), logging.WARNING, "garbage connections",
                        burst=3, interval=0.2)
    for i in range(1000):
        throttle.log("garbage from %d", i)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["garbage from 0", "garbage from 1", "garbage from 2"]
    await asyncio.sleep(0.3)  # the interval's end is what is being tested
    assert caplog.records[-1].getMessage() == "997 more garbage connections in 0.2s were not logged"
    assert throttle.suppressed == 0
    throttle.log("garbage again")
    assert caplog.records[-1].getMessage() == "garbage again"
