"""The test support itself: waits that give up in time with a clear message."""

from __future__ import annotations

import asyncio
import time

import pytest

from testkit.peers import BeamPeer, PeerError
from testkit.wait import eventually, eventually_async


def test_wait_started_times_out_on_a_peer_that_never_answers() -> None:
    # `sleep` holds both pipes open and never answers: only a real timeout ends the wait
    peer = BeamPeer(lambda fds: ["sleep", "30"], "silent", None, "cookie")
    try:
        began = time.monotonic()
        with pytest.raises(PeerError, match=r"silent@localhost did not answer '1' within 1\.0s"):
            peer.wait_started(timeout=1.0)
        assert time.monotonic() - began < 10  # the point: it does not wait for the 30 s
        assert peer.proc.poll() is not None  # killed: a late answer would be out of step
    finally:
        if peer.proc.poll() is None:
            peer.proc.kill()
            peer.proc.wait()


def test_eventually_returns_the_first_true_value() -> None:
    values = iter([0, None, "", "ready"])
    assert eventually(lambda: next(values), interval=0) == "ready"


def test_eventually_names_the_condition_when_it_gives_up() -> None:
    with pytest.raises(AssertionError, match=r"not true within 0\.05s: .*lambda: \[\].*"
                                             r"\(last value: \[\]\)"):
        eventually(lambda: [], timeout=0.05)
    with pytest.raises(AssertionError, match="the queue drains"):
        eventually(lambda: False, timeout=0.01, what="the queue drains")


async def test_eventually_async_awaits_coroutine_predicates() -> None:
    calls = 0

    async def third_time() -> bool:
        nonlocal calls
        calls += 1
        return calls == 3

    assert await eventually_async(third_time, interval=0) is True
    assert calls == 3


async def test_eventually_async_bounds_a_predicate_that_hangs() -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    with pytest.raises(AssertionError, match=r"not true within 0\.05s: .*hangs"):
        await eventually_async(hangs, timeout=0.05)


async def test_eventually_async_lets_the_predicates_own_timeout_through() -> None:
    async def times_out() -> bool:
        raise TimeoutError("its own")

    with pytest.raises(TimeoutError, match="its own"):
        await eventually_async(times_out)


def test_eventually_can_describe_the_state_when_it_gives_up() -> None:
    state = {"handled": 3}
    with pytest.raises(AssertionError, match="handled 3 of 5"):
        eventually(lambda: state["handled"] >= 5, timeout=0.01,
                   what=lambda: f"handled {state['handled']} of 5")
