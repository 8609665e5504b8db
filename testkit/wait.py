"""Waiting for a condition that has no event of its own to wait on.

Prefer an event whenever the code under test offers one (an ``asyncio.Event``, a monitor, a
reply): these helpers poll, and are for state that only changes out of sight, such as another
node's tables or a counter with no notification.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

from pybroadway._aio import maybe_await

T = TypeVar("T")

TIMEOUT = 10.0
"""Default upper bound of a wait; a passing test normally stops waiting far sooner."""

INTERVAL = 0.02
"""Default pause between two evaluations of the condition."""


Description = str | Callable[[], str] | None
"""What a failed wait reports: a text, or a function giving one (for state at that moment)."""


def eventually(predicate: Callable[[], T], *, timeout: float = TIMEOUT,
               interval: float = INTERVAL, what: Description = None) -> T:
    """Call ``predicate`` until it returns a true value, and return that value.

    Raises AssertionError naming the condition (``what``, or else the predicate's source) and
    its last value when ``timeout`` seconds pass first. For synchronous code; blocks the thread.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(_failure(predicate, what, timeout, value))
        time.sleep(min(interval, left))


@overload
async def eventually_async(predicate: Callable[[], Awaitable[T]], *, timeout: float = ...,
                           interval: float = ..., what: Description = ...) -> T: ...
@overload
async def eventually_async(predicate: Callable[[], T], *, timeout: float = ...,
                           interval: float = ..., what: Description = ...) -> T: ...


async def eventually_async(predicate: Callable[[], T | Awaitable[T]], *,
                           timeout: float = TIMEOUT, interval: float = INTERVAL,
                           what: Description = None) -> T:
    """Like :func:`eventually`, on the running event loop: ``predicate`` may be a coroutine
    function, and the loop keeps running between evaluations (and during an awaited one,
    which the timeout also bounds)."""
    last: object = None
    try:
        async with asyncio.timeout(timeout) as scope:
            while True:
                last = value = await maybe_await(predicate())
                if value:
                    return value
                await asyncio.sleep(interval)
    except TimeoutError:
        if not scope.expired():
            raise  # the predicate's own timeout, not ours
        raise AssertionError(_failure(predicate, what, timeout, last)) from None


def _failure(predicate: Callable[[], object], what: Description, timeout: float,
             last: object) -> str:
    if callable(what):
        what = what()
    return f"not true within {timeout}s: {what or _source(predicate)} (last value: {last!r})"


def _source(predicate: Callable[[], object]) -> str:
    """The predicate's source line(s), which is what a reader of the failure wants to see."""
    try:
        return " ".join(line.strip() for line in inspect.getsource(predicate).splitlines())
    except (OSError, TypeError):
        return repr(predicate)
