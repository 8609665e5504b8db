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


class _Clock:
    """Stands for time.monotonic in the throttle: the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_burst_once_per_flood_then_only_counts(caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With burst_each_interval=False the first lines of a flood are logged, then only one
    count per interval for as long as it lasts; a quiet interval ends the flood."""
    clock = _Clock()
    monkeypatch.setattr("pybroadway._throttle.time", clock)
    caplog.set_level(logging.ERROR, logger="flood")
    throttle = Throttle(logging.getLogger("flood"), logging.ERROR, "x: handle_message raised",
                        burst=3, interval=1.0, burst_each_interval=False,
                        summary="{what}: and {count:,} more like it in {interval:g}s")
    for second in range(3):  # a flood lasting three intervals, 2,000 lines each
        for i in range(2000):
            clock.now += 0.0004
            throttle.log("failure %d.%d", second, i, exc_info=ValueError("boom"))
    throttle.flush()  # what a stopping pipeline does
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == ["failure 0.0", "failure 0.1", "failure 0.2"]
    assert all(r.exc_info for r in caplog.records[:3])
    counts = lines[3:]
    assert all(line.startswith("x: handle_message raised: and ") for line in counts), counts
    assert len(counts) <= 4
    assert sum(int(line.split()[4].replace(",", "")) for line in counts) == 6000 - 3
    assert not any(r.exc_info for r in caplog.records[3:])

    caplog.clear()
    clock.now += 1.5  # a quiet interval: the next failure is a new flood, logged in full
    throttle.log("failure again")
    assert [r.getMessage() for r in caplog.records] == ["failure again"]
