"""The stages' supervisor: Broadway's restart semantics for a pipeline's stages.

Processors and batch processors run as tasks; producers and batchers hold messages without
one. When a stage crashes — its task raised or was cancelled from outside, or
:meth:`StageSupervisor.kill` was called on it — what it held is acknowledged as failed (never
dropped), the stage is emptied in place (its counters, its name and whoever refers to it stay
valid) and its task, if it has one, runs again. More than ``max_restarts`` restarts within
``max_seconds`` means the fault is not transient: the supervisor gives up, says why in
:meth:`failed`, and the pipeline stops.
"""

from __future__ import annotations

import asyncio
import logging
import reprlib
from collections.abc import Coroutine
from typing import Any, Protocol

from pybroadway._restarts import RestartIntensity
from pybroadway.errors import PyBroadwayError

from ._message import Message, fail_all
from ._outcomes import Outcomes

logger = logging.getLogger("pybroadway.pipeline")


class Stage(Protocol):
    """What the supervisor needs of a stage (its ``repr`` names it in the log)."""

    def take_everything(self) -> list[Message]:
        """Empty the stage; return the messages it held."""


class TaskStage(Stage, Protocol):
    """A stage that runs as a task."""

    def run(self) -> Coroutine[Any, Any, None]:
        """The stage's work; returns once it is drained."""


class StageCrashed(PyBroadwayError):
    """The status reason of the messages a crashed stage held: ``("error", StageCrashed)``."""


class StageSupervisor:
    """Runs a pipeline's task stages and restarts any stage that crashes."""

    def __init__(self, name: str, outcomes: Outcomes, max_restarts: int,
                 max_seconds: float) -> None:
        self.name = name
        self._outcomes = outcomes
        self._intensity = RestartIntensity(max_restarts, max_seconds)
        self._tasks: dict[TaskStage, asyncio.Task[None]] = {}
        self._done: dict[TaskStage, asyncio.Future[None]] = {}
        self._stopping = False
        self._failure: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.restarts = 0

    def start(self, stage: TaskStage) -> None:
        """Run ``stage``'s task (again, after a crash)."""
        if stage not in self._done:
            self._done[stage] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(stage.run())
        self._tasks[stage] = task
        task.add_done_callback(lambda ended: self._ended(stage, ended))

    async def finished(self, stages: list[TaskStage]) -> None:
        """Return once each of ``stages`` returned from its task (they drained)."""
        await asyncio.gather(*(asyncio.shield(self._done[stage]) for stage in stages))

    def kill(self, stage: Stage, reason: str = "killed") -> None:
        """Crash ``stage`` as if it failed: a task stage's task is cancelled, any other
        stage is emptied and goes on (what it held fails)."""
        task = self._tasks.get(stage)  # type: ignore[call-overload]
        if task is not None:
            task.cancel(reason)
        else:
            self._crashed(stage, StageCrashed(f"{stage!r} {reason}"))

    def crash(self, stage: Stage, error: BaseException) -> None:
        """``stage`` (one without a task: a producer) failed with ``error``: it starts afresh
        as a killed one does, within the restart intensity. Nothing once the supervisor
        stops or gave up."""
        if not self._stopping and not self._failure.done():
            self._crashed(stage, error)

    async def stop(self) -> None:
        """Cancel every task (shutdown timed out); nothing is restarted any more."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def failed(self) -> str:
        """Wait until the supervisor gave up; return why."""
        return await asyncio.shield(self._failure)

    def _ended(self, stage: TaskStage, task: asyncio.Task[None]) -> None:
        if self._tasks.get(stage) is task:
            del self._tasks[stage]
        if self._stopping:
            return
        if task.cancelled():
            error: BaseException = StageCrashed(f"{stage!r} was killed")
        else:
            raised = task.exception()
            if raised is None:
                done = self._done[stage]
                if not done.done():
                    done.set_result(None)
                return
            error = raised
        if self._crashed(stage, error):
            self.start(stage)

    def _crashed(self, stage: Stage, error: BaseException) -> bool:
        """Fail what ``stage`` held; whether it may go on (within the restart intensity)."""
        held = stage.take_everything()
        if held:
            self._outcomes.ack([], fail_all(held, ("error", error)))
        if self._failure.done():
            return False
        # A StageCrashed says why in its text (its traceback would be the supervisor's own).
        told = isinstance(error, StageCrashed)
        if not self._intensity.allow():
            why = (f"stages crashed more than {self._intensity.intensity} times in "
                   f"{self._intensity.period}s, the last {stage!r}: "
                   + (str(error) if told else
                      f"{type(error).__name__} {reprlib.repr(str(error))}"))
            logger.error("%s: %s; the pipeline stops", self.name, why)
            self._failure.set_result(why)
            for done in self._done.values():
                if not done.done():
                    done.set_result(None)  # a drain waiting on them ends: the pipeline stops
            return False
        self.restarts += 1
        logger.error("%s: %r crashed (%s), %d messages it held failed; restarted",
                     self.name, stage, str(error) if told else type(error).__name__,
                     len(held), exc_info=None if told else error)
        return True

