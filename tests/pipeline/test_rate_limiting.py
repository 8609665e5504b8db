"""Rate limiting: shared by all producers, accurate over several intervals, changeable."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pybroadway.pipeline import Message, OptionsError, Producer

from .helpers import Passthrough, Recorder, messages


class Timing(Passthrough):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.times: list[float] = []

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        self.times.append(time.monotonic())
        return message


def limited(allowed: int, interval: int, producers: int = 1) -> Timing:
    return Timing(producer={"module": (Producer, {"buffer_size": None}),
                            "concurrency": producers,
                            "rate_limiting": {"allowed_messages": allowed,
                                              "interval": interval}},
                  processors={"default": {"concurrency": 3, "max_demand": 10}})


def assert_within_limit(times: list[float], start: float, allowed: int, interval: float) -> None:
    for count, moment in enumerate(sorted(times), start=1):
        refills = int((moment - start) / interval)
        assert count <= allowed * (1 + refills)


async def test_rate_is_kept_over_several_intervals_across_producers() -> None:
    recorder = Recorder()
    start = time.monotonic()
    pipeline = limited(allowed=20, interval=50, producers=2)
    async with pipeline:
        for chunk in range(5):
            pipeline.push_messages(messages(recorder, range(chunk * 20, chunk * 20 + 20)))
        await recorder.wait_for(100)
        elapsed = time.monotonic() - start
    assert_within_limit(pipeline.times, start, 20, 0.05)
    assert 0.2 <= elapsed < 1.0  # 4 refills after the first 20
    assert len(pipeline.producers) == 2


async def test_read_and_change_the_rate_at_run_time() -> None:
    recorder = Recorder()
    pipeline = limited(allowed=5, interval=40)
    async with pipeline:
        assert pipeline.get_rate_limiting() == {"allowed_messages": 5, "interval": 40}
        pipeline.update_rate_limiting(allowed_messages=50)
        assert pipeline.get_rate_limiting() == {"allowed_messages": 50, "interval": 40}
        start = time.monotonic()
        pipeline.push_messages(messages(recorder, range(105)))
        await recorder.wait_for(105)
        elapsed = time.monotonic() - start
        with pytest.raises(OptionsError) as info:
            pipeline.update_rate_limiting(interval=0)
    # 5 (left in the first interval) + 50 + 50: two refills at the new rate, not twenty
    assert elapsed < 0.5
    assert str(info.value) == ("invalid value for :interval option: expected positive "
                               "integer, got: 0 (in options [:producer, :rate_limiting])")


async def test_without_rate_limiting() -> None:
    pipeline = Passthrough(producer={"module": Producer}, processors={"default": {}})
    async with pipeline:
        assert pipeline.get_rate_limiting() is None
        with pytest.raises(RuntimeError, match="not enabled"):
            pipeline.update_rate_limiting(allowed_messages=1)
