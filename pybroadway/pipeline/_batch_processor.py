"""The batch processors: run the pipeline's ``handle_batch`` on the batches a stage emits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pybroadway._aio import maybe_await
from pybroadway.errors import CallbackError

from . import telemetry
from ._message import BatchInfo, Message, fail_all
from ._outcomes import Outcomes

if TYPE_CHECKING:
    from ._batcher import BatchStage

_BATCH_START = ("broadway", "batch_processor", "start")
_BATCH_STOP = ("broadway", "batch_processor", "stop")
_BATCH_EXCEPTION = ("broadway", "batch_processor", "exception")


@dataclass(frozen=True, slots=True)
class BatchProcessorGroup:
    """What the batch processors of one batcher share: their pipeline's ``name``, the
    ``batcher``'s name, ``handle_batch`` and the ``context`` it is given (run in ``executor``
    if one is given), and the pipeline's ``outcomes``."""

    name: str
    batcher: Any
    handle_batch: Callable[..., Any]
    context: Any
    executor: Executor | None
    outcomes: Outcomes


class BatchProcessor:
    """One batch processor (a BatchProcessorStage in Broadway) of a batcher.

    :meth:`run` is its task: it takes ready batches from ``stage`` until the stage is closed
    and empty.
    """

    __slots__ = ("group", "index", "stage")

    def __init__(self, group: BatchProcessorGroup, stage: BatchStage, index: int) -> None:
        self.group = group
        self.stage = stage
        self.index = index

    def __repr__(self) -> str:
        return f"batch processor {self.index} of batcher {self.group.batcher!r}"

    def take_everything(self) -> list[Message]:
        """Empty this batch processor (it crashed): return the batch it was handling."""
        return self.stage.current.pop(self.index, [])

    async def run(self) -> None:
        stage = self.stage
        index = self.index
        while True:
            taken = stage.take()
            if taken is None:
                if stage.closed:
                    return
                await stage.has_work.wait()
                continue
            messages, info = taken
            stage.current[index] = messages
            began = time.monotonic()
            await self._handle_batch(messages, info)
            stage.busy += time.monotonic() - began
            del stage.current[index]

    async def _handle_batch(self, messages: list[Message], info: BatchInfo) -> None:
        group = self.group
        name = group.batcher
        observed = telemetry.observed(_BATCH_START, _BATCH_STOP, _BATCH_EXCEPTION)
        if observed:
            started = time.monotonic_ns()
            meta = {"name": group.name, "batcher": name, "index": self.index,
                    "messages": messages, "batch_info": info}
            telemetry.emit(_BATCH_START,
                           {"system_time": time.time_ns(), "monotonic_time": started}, meta)
        handle_batch = group.handle_batch
        log = group.outcomes.callback_log
        try:
            if group.executor is not None:
                result = await asyncio.get_running_loop().run_in_executor(
                    group.executor, handle_batch, name, messages, info, group.context)
            else:
                called = time.monotonic()
                returned = handle_batch(name, messages, info, group.context)
                log.held("handle_batch", called, "a batch", len(messages))
                result = await maybe_await(returned)
        except Exception as raised:
            log.raised("handle_batch", raised, f"on a batch of {len(messages)}", f" of {name}",
                       data=messages[0].data if messages else None)
            error: Exception | None = raised
        else:
            error = None if isinstance(result, list) and all(
                isinstance(message, Message) for message in result) else CallbackError(
                log.returned("handle_batch", result, "a list of messages"))
        if error is not None:
            if observed:
                telemetry.emit(_BATCH_EXCEPTION, {"monotonic_time": time.monotonic_ns()},
                               {**meta, "error": error})
            result = fail_all(messages, ("error", error))
        ok = [message for message in result if message.status == "ok"]
        failed = [message for message in result if message.status != "ok"]
        stage = self.stage
        stage.batches += 1
        stage.successful += len(ok)
        stage.failed += len(failed)
        if failed:
            failed = await group.outcomes.handle_failed(failed)
        group.outcomes.ack(ok, failed)
        if observed:
            telemetry.emit_stop(_BATCH_STOP, started, meta, ok, failed)
