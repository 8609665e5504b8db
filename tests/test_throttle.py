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


def test_a_count_left_by_a_loop_that_ended_is_reported_in_the_next(
        caplog: pytest.LogCaptureFixture) -> None:
    """A module's throttle outlives an event loop (one per test, or per Node run): lines left
    out while a loop ended before the interval did are still counted, and the next loop's
    interval reports them with its own."""
    caplog.set_level(logging.WARNING, logger="flood")
    throttle = Throttle(logging.getLogger("flood"), logging.WARNING, "garbage connections",
                        burst=1, interval=0.2)

    async def flood() -> None:
        for i in range(10):
            throttle.log("garbage from %d", i)

    asyncio.run(flood())  # ends within the interval: its report never runs
    asyncio.run(flood())  # the same interval: every line is left out

    async def flood_then_wait() -> None:
        await flood()
        await asyncio.sleep(0.3)

    asyncio.run(flood_then_wait())
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1].endswith("more garbage connections in 0.2s were not logged"), lines
    assert throttle.suppressed == 0
