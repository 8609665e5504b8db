"""Watching for ``async def`` callbacks that block the event loop.

A plain callback that holds the loop is timed where it is called (``CallbackLog.held``). A
coroutine cannot be: it holds the loop between its awaits, and from outside only the whole call,
waits included, can be timed. So a thread looks instead. The loop beats every :data:`BEAT`
seconds; when a beat is over :data:`~._callback_log.HOLD_LIMIT` late, the thread looks at what
the loop's thread is running and notes the pipeline's coroutine callback it finds in that
stack, if any. The next beat, once the loop runs again, warns about it, once per callback.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import CodeType, FrameType
from typing import Any

from ._callback_log import HOLD_LIMIT, CallbackLog, logger

BEAT = 0.05
"""Seconds between two beats of the loop, and between two looks of the thread."""
RESTARTS = 3
"""Times a thread that failed is replaced (by the beat, which supervises it) before the
watch gives up, saying so."""


class HoldWatch:
    """Watches those of a pipeline's ``callbacks`` (name: function or None) that are
    coroutine functions, from :meth:`start` to :meth:`stop`, and warns through ``log``."""

    def __init__(self, log: CallbackLog, callbacks: Mapping[str, Callable[..., Any] | None]
                 ) -> None:
        self._log = log
        self._codes: dict[CodeType, str] = {}
        for name, callback in callbacks.items():
            code = getattr(getattr(callback, "__func__", callback), "__code__", None)
            if code is not None and code.co_flags & inspect.CO_COROUTINE:
                self._codes[code] = name
        self._beat = 0.0
        self._culprit: tuple[str, float] | None = None  # (callback, when its hold began)
        self._timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._restarts = 0

    def start(self) -> None:
        """Beat in the running loop and look from a thread of its own (not if no callback
        is a coroutine function)."""
        if not self._codes or self._thread is not None:
            return
        self._beat = time.monotonic()
        self._timer = asyncio.get_running_loop().call_later(BEAT, self._on_beat)
        self._start_thread()

    def _start_thread(self) -> None:
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._look, args=(loop, threading.get_ident()),
                                        name=f"{self._log.name}.hold_watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and looking; the thread ends within :data:`BEAT`."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._done.set()
        self._thread = None

    def _on_beat(self) -> None:
        now = time.monotonic()
        culprit, self._culprit = self._culprit, None
        if culprit is not None:
            callback, since = culprit
            self._log.held_async(callback, now - since)
        self._beat = now
        thread = self._thread
        if thread is not None and not thread.is_alive():  # it failed (and said why)
            if self._restarts == RESTARTS:
                logger.error("%s: the hold watch failed %d times; async def callbacks that "
                             "block the event loop are no longer named", self._log.name,
                             RESTARTS + 1)
                self.stop()
                return
            self._restarts += 1
            self._start_thread()
        self._timer = asyncio.get_running_loop().call_later(BEAT, self._on_beat)

    def _look(self, loop: asyncio.AbstractEventLoop, loop_thread: int) -> None:
        # Ends with stop(), or with the loop if the pipeline was never stopped.
        try:
            while not self._done.wait(BEAT) and not loop.is_closed():
                since = self._beat
                if self._culprit is None and time.monotonic() - since > HOLD_LIMIT + BEAT:
                    callback = self._running(sys._current_frames().get(loop_thread))
                    if callback is not None:
                        self._culprit = (callback, since)
        except Exception:
            logger.exception("%s: the hold watch failed; the event loop's next beat "
                             "restarts it", self._log.name)

    def _running(self, frame: FrameType | None) -> str | None:
        """The watched callback in the stack of ``frame``, innermost first, if any."""
        while frame is not None:
            callback = self._codes.get(frame.f_code)
            if callback is not None:
                return callback
            frame = frame.f_back
        return None

