"""How a pipeline logs what its callbacks did wrong: raised, returned the wrong thing, or held
the event loop.

A callback that fails, fails the same way for every message: its first failures are logged in
full (as Broadway logs a crash in a callback: the exception and its traceback), then only a
count per interval (through :class:`~pybroadway._throttle.Throttle`), so that 5,000 failed
messages cost a few lines, not 40,000. The last :data:`RECENT` failures are also kept, as
:class:`Failure` records, for a reader such as the dashboard (:attr:`CallbackLog.recent`).
"""

from __future__ import annotations

import logging
import reprlib
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from pybroadway._throttle import Throttle

logger = logging.getLogger("pybroadway.pipeline")

HOLD_LIMIT = 0.1
"""Seconds a callback may run in the event loop at a stretch before it is warned about."""

_FIRST = 3  # failures of a kind logged in full before only their count is
_INTERVAL = 5.0  # seconds between two count lines of a kind
_KINDS = 64  # kinds tracked one by one; beyond, a callback's other failures share one kind
_MORE = "{what}: and {count:,} more like it"
_PACKAGE = str(Path(__file__).resolve().parent.parent)
RECENT = 50
"""Failures :attr:`CallbackLog.recent` keeps (the oldest go first)."""


ERROR_CHARS = 300
"""Characters of an exception's text a :class:`Failure` keeps."""


class Failure(NamedTuple):
    """A callback that raised: when (``time.time()``), which callback of which stage
    (``"handle_message"``, ``"handle_batch of db"``), the exception as text (its type and
    message, at most :data:`ERROR_CHARS`: the exception itself would keep its traceback's
    frames alive), and the data of the message it was given (of the first, for a batch or a
    chunk; None when it had none)."""

    time: float
    callback: str
    error: str
    data: Any


class CallbackLog:
    """The failure log of the pipeline ``name``: one throttle per kind of failure (the
    callback and what it raised, or the type it returned), and the callbacks already warned
    about holding the event loop."""

    __slots__ = ("_kinds", "_warned_holding", "name", "raised_count", "recent")

    def __init__(self, name: str) -> None:
        self.name = name
        self._kinds: dict[tuple[str, str, str], Throttle] = {}
        self._warned_holding: set[str] = set()
        self.recent: deque[Failure] = deque(maxlen=RECENT)
        self.raised_count = 0  # failures ever recorded: a reader tells new ones from it

    def raised(self, callback: str, error: BaseException, on: str, of: str = "",
               data: Any = None) -> None:
        """``callback`` (``of`` a stage: ``" of default"``) raised ``error`` ``on`` what it
        was given (``"on a batch of 10"``; ``data``: a message's data)."""
        text = f"{type(error).__qualname__}: {error}"
        self.recent.append(Failure(time.time(), callback + of, text[:ERROR_CHARS], data))
        self.raised_count += 1
        what = type(error).__qualname__
        throttle = self._kind(callback, "raised", what, f"{callback} raised {what}", _FIRST)
        throttle.log("%s: %s%s raised %s %s", self.name, callback, of, what, on,
                     exc_info=(type(error), error, _from_the_callback(error.__traceback__)))

    def returned(self, callback: str, result: Any, wanted: str) -> str:
        """``callback`` returned ``result`` where ``wanted`` is what it must return: one line,
        no traceback (the fault is the return value, not a place in the code). Returns the
        reason, for the messages it fails."""
        reason = (f"{callback} must return {wanted}, got: {reprlib.repr(result)}"
                  + (" (a missing return?)" if result is None else ""))
        got = type(result).__qualname__
        throttle = self._kind(callback, "returned", got, f"{callback} returned {got}", 1)
        throttle.log("%s: %s", self.name, reason)
        return reason

    def held(self, callback: str, since: float, given: str, count: int) -> None:
        """``callback`` (a plain function run in the event loop) ran from ``since`` (a
        :func:`time.monotonic`) to now on ``given`` (``"a chunk"``) of ``count`` messages:
        over :data:`HOLD_LIMIT`, warn, once per callback."""
        seconds = time.monotonic() - since
        if seconds <= HOLD_LIMIT or callback in self._warned_holding:
            return
        self._warned_holding.add(callback)
        logger.warning(
            "%s: %s held the event loop for %.2fs on %s of %d messages: a plain def "
            "callback runs in the event loop, where nothing else runs meanwhile (pushes, "
            "timers, Ctrl-C). Make it async def if it waits on I/O; give its stage "
            "{\"executor\": \"thread\"} if it blocks; run it in worker processes (--workers, "
            "or offload=) if it computes (logged once)", self.name, callback, seconds, given, count)

    def held_async(self, callback: str, seconds: float) -> None:
        """``callback`` (a coroutine function) held the event loop for about ``seconds``
        between two of its awaits: warn, once per callback."""
        if callback in self._warned_holding:
            return
        self._warned_holding.add(callback)
        logger.warning(
            "%s: %s held the event loop for about %.2fs between two awaits: an async def "
            "callback runs in the event loop, where nothing else runs until it awaits "
            "(pushes, timers, Ctrl-C). Await its blocking calls in a thread (await "
            "asyncio.to_thread(...)), or make it a plain def with {\"executor\": \"thread\"} "
            "(logged once)", self.name, callback, seconds)

    def flush(self) -> None:
        """Log the counts not yet logged (the pipeline stopped: its intervals will not end)."""
        for throttle in self._kinds.values():
            throttle.flush()

    def _kind(self, callback: str, how: str, what: str, label: str, first: int) -> Throttle:
        key = (callback, how, what)
        throttle = self._kinds.get(key)
        if throttle is None:
            if len(self._kinds) >= _KINDS:  # what a callback raises may be endlessly varied
                key = (callback, how, "")
                label = f"{callback} {how}"
                throttle = self._kinds.get(key)
            if throttle is None:
                throttle = self._kinds[key] = Throttle(
                    logger, logging.ERROR, f"{self.name}: {label}", burst=first,
                    interval=_INTERVAL, burst_each_interval=False, summary=_MORE)
        return throttle


def _from_the_callback(traceback: TracebackType | None) -> TracebackType | None:
    """``traceback`` without its first frames in pybroadway (the stage that called the
    callback): it starts where the user's code does."""
    while (traceback is not None and traceback.tb_next is not None
           and traceback.tb_frame.f_code.co_filename.startswith(_PACKAGE)):
        traceback = traceback.tb_next
    return traceback
