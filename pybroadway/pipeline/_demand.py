"""A pull-mode producer's calls to its ``handle_demand``.

A plain ``handle_demand`` is called at once with each new demand; a coroutine's calls are
serialised, the demand that comes meanwhile summed for the next. What it returns goes to the
producer. One that raises crashes the producer, as it crashes a GenStage producer: the
producer's supervisor restarts it (:meth:`PullDemand.restart`), and the new incarnation is
asked again for what the processors wait for.
"""

from __future__ import annotations

import asyncio
import reprlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from ._supervisor import StageCrashed

if TYPE_CHECKING:
    from ._callback_log import CallbackLog

Handler = Callable[[int], Any]


class PullDemand:
    """Asks ``handle_demand`` (a ``coroutine`` function or not) and gives what it returns to
    ``take``. ``log()`` is where its failures go and ``crash(error)`` what a raise calls; both
    are read at each call (a reload gives the producer another pipeline). ``stopped()`` says
    the producer drains: no more calls then."""

    def __init__(self, handle_demand: Handler, coroutine: bool, take: Callable[[Any], None],
                 log: Callable[[], CallbackLog], crash: Callable[[StageCrashed], None],
                 stopped: Callable[[], bool], name: str) -> None:
        self._handle_demand = handle_demand
        self._take = take
        self._log = log
        self._crash = crash
        self._stopped = stopped
        self._name = name
        self._coroutine = coroutine
        self._new = 0  # demand come while a coroutine's call runs, for the next one
        self._task: asyncio.Task[None] | None = None
        self._crashing = False  # it raised: nothing more is asked until the restart

    def ask(self, demand: int) -> None:
        """New demand: call ``handle_demand`` with it (a coroutine's: once the last returned)."""
        if self._crashing:
            return
        if not self._coroutine:
            started = time.monotonic()
            try:
                result = self._handle_demand(demand)
            except Exception as error:
                self._raised(error, demand)
                return
            finally:
                self._log().held("handle_demand", started, "a demand", demand)
            self._take(result)
            return
        self._new += demand
        if self._task is None:
            self._task = asyncio.create_task(self._serialised())

    def restart(self) -> None:
        """The producer starts afresh: what was being asked is not any more."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._new = 0
        self._crashing = False

    async def _serialised(self) -> None:
        try:
            while self._new and not self._stopped():
                demand, self._new = self._new, 0
                try:
                    result = await cast(Awaitable[Any], self._handle_demand(demand))
                except Exception as error:
                    self._raised(error, demand)
                    return
                self._take(result)
        finally:
            if self._task is asyncio.current_task():  # not replaced by a restart
                self._task = None

    def _raised(self, error: Exception, demand: int) -> None:
        self._log().raised("handle_demand", error, f"on a demand of {demand}",
                           f" of {self._name}")
        if self._crashing:
            return
        # Crashed in the next turn, not from within the ask: a restart asks handle_demand
        # again, and one that raises every time must not recurse.
        self._crashing = True
        asyncio.get_running_loop().call_soon(self._crash, StageCrashed(
            f"handle_demand raised {type(error).__qualname__}: {reprlib.repr(str(error))}"))
