"""The topology of a running pipeline: builds and starts its stages, acknowledges what leaves
them, drains them when the pipeline stops."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from pybroadway._aio import maybe_await
from pybroadway.errors import ArgumentError

from ._batch_processor import BatchProcessor
from ._batcher import Batcher
from ._message import Message, ack_messages, fail_all
from ._processor import MessageHandler, Processor
from ._producer import Producer
from ._rate_limiter import RateLimiter
from ._remote import RemoteFront

if TYPE_CHECKING:
    from ._pipeline import Pipeline

logger = logging.getLogger("pybroadway.pipeline")

RATE_WINDOW = 1.0
"""Seconds: ``stats()["rate"]`` is measured over the last one to two of these."""

_SHUTDOWN = ("failed", "shutdown")


class Topology:
    """The stages of one running pipeline, their tasks and counters.

    Producers feed processors, which hand successful messages to batchers (or acknowledge
    them), whose batch processors acknowledge the batches. The topology is the
    :class:`~._producer.ProducerHost` of its producers.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        options = pipeline.options
        self.name: str = options["name"]
        self.context = options["context"]
        producer_options = options["producer"]
        processor_options = options["processors"]["default"]
        self.processor_options = processor_options
        self.transformer = producer_options["transformer"]
        self.partition_by = processor_options["partition_by"] or options["partition_by"]
        concurrency = processor_options["concurrency"]
        self.partitions = concurrency if self.partition_by is not None else 1
        self.handled = self.failed = 0
        self._untaken = 0
        self._owned_executors: list[Executor] = []
        self.message_handler = MessageHandler(pipeline.handle_message,
                                              pipeline.prepare_messages, self.context)
        self.handle_batch = pipeline.handle_batch
        self._handle_failed = pipeline.handle_failed

        limit = producer_options["rate_limiting"]
        self.rate_limiter = (
            RateLimiter(limit["allowed_messages"], limit["interval"], self._serve_producers)
            if limit is not None else None
        )
        module = producer_options["module"]
        cls, kwargs = module if isinstance(module, tuple) else (module, {})
        self.producers: list[Producer] = []
        for index in range(producer_options["concurrency"]):
            producer = cls(**kwargs)
            producer._attach(self, f"{self.name}.Broadway.Producer_{index}")
            self.producers.append(producer)
        self.push_turn = itertools.cycle(self.producers)

        # With workers, the processors and batchers run in them; a RemoteFront stands here.
        workers = options["workers"]
        self.remote = (RemoteFront(self, _front_options(pipeline, workers, self.producers))
                       if workers is not None else None)
        self.processors = [
            Processor(self, index, index if self.partition_by is not None else 0)
            for index in range(concurrency)
        ] if workers is None else []
        self.processor_executor = (self._executor(processor_options, "processor")
                                   if workers is None else None)
        self.batchers = {
            name: Batcher(name, batcher_options,
                          batcher_options["partition_by"] or options["partition_by"])
            for name, batcher_options in options["batchers"].items()
        } if workers is None else {}
        # A pipeline without batchers acknowledges right after handle_message; a message put
        # to a batcher there is a mistake worth one warning (watched until it is given).
        self.watch_batchers = not self.batchers
        self._batch_executors = {
            name: self._executor(batcher.options, f"batch_processor_{name}")
            for name, batcher in self.batchers.items()
        }
        self._processor_tasks: list[asyncio.Task[None]] = []
        self._batch_tasks: list[asyncio.Task[None]] = []
        # Two marks (time, messages done), the newer at most RATE_WINDOW old, so that the rate
        # covers the last one to two windows whoever reads it and however often.
        started = (time.monotonic(), 0)
        self._rate_marks = (started, started)

    def _executor(self, options: dict[str, Any], label: str) -> Executor | None:
        executor = options["executor"]
        if executor == "thread":
            owned = ThreadPoolExecutor(options["concurrency"],
                                       thread_name_prefix=f"{self.name}.{label}")
            self._owned_executors.append(owned)
            return owned
        return cast("Executor | None", executor)

    def _serve_producers(self) -> None:
        for producer in self.producers:
            producer._serve_all()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the producers, then the batch processors and the processors."""
        for producer in self.producers:
            await maybe_await(producer.on_start())
        if self.rate_limiter is not None:
            self.rate_limiter.start()
        if self.remote is not None:
            await self.remote.start()
        for batcher in self.batchers.values():
            executor = self._batch_executors[batcher.name]
            for stage in batcher.stages:
                workers = batcher.options["concurrency"] if stage.partition is None else 1
                for index in range(workers):
                    worker_index = index if stage.partition is None else stage.partition
                    worker = BatchProcessor(self, batcher.name, stage, worker_index, executor)
                    self._batch_tasks.append(self._spawn(worker.run()))
        self._processor_tasks = [self._spawn(p.run()) for p in self.processors]

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        task.add_done_callback(self._check_task)
        return task

    def _check_task(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: a stage crashed", self.name, exc_info=task.exception())

    async def stop(self, timeout: float) -> None:
        """Drain within ``timeout`` seconds, then fail what is left; stop the producers."""
        for producer in self.producers:
            await maybe_await(producer.prepare_for_draining())
            producer._start_draining()
        try:
            await asyncio.wait_for(self._drain(), timeout)
        except TimeoutError:
            logger.warning("%s: shutdown timed out; acknowledging what is left as failed",
                           self.name)
            await self._abandon()
        if self.remote is not None:
            await self.remote.offload.stop()
        if self.rate_limiter is not None:
            self.rate_limiter.stop()
        for executor in self._owned_executors:
            executor.shutdown(wait=False)
        for producer in self.producers:
            await maybe_await(producer.on_stop())

    async def _drain(self) -> None:
        if self.remote is not None:
            await self.remote.drain()
        await asyncio.gather(*self._processor_tasks)
        for batcher in self.batchers.values():
            for stage in batcher.stages:
                stage.close()
        await asyncio.gather(*self._batch_tasks)

    async def _abandon(self) -> None:
        tasks = self._processor_tasks + self._batch_tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        taken: list[Message] = []
        for processor in self.processors:
            taken += processor.take_everything()
        for batcher in self.batchers.values():
            for stage in batcher.stages:
                taken += stage.take_everything()
        self.ack([], fail_all(taken, _SHUTDOWN))
        if self.remote is not None:
            self.remote.abandon(_SHUTDOWN[1])
        for producer in self.producers:
            self.fail_untaken(producer._take_everything(), "shutdown")

    # -- acknowledgement -------------------------------------------------------------------

    def warn_unbatched(self, messages: list[Message]) -> None:
        """Warn (once) if ``messages`` were put to a batcher: this pipeline has none. The first
        and the last of each chunk are looked at (a handler that does it does it often)."""
        for message in (messages[0], messages[-1]) if messages else ():
            if message.batcher != "default":
                self.watch_batchers = False
                logger.warning(
                    "%s: a message was put to batcher %r, but the pipeline has no batchers: "
                    "such messages are acknowledged after handle_message and handle_batch "
                    "never runs; give the pipeline batchers={%r: {...}} (logged once)",
                    self.name, message.batcher, message.batcher)
                return

    def ack(self, successful: list[Message], failed: list[Message]) -> None:
        """Acknowledge messages that left the pipeline, and count them."""
        self.handled += len(successful)
        self.failed += len(failed)
        ack_messages(successful, failed)

    def fail_untaken(self, messages: list[Message], reason: Any) -> None:
        """Acknowledge as failed messages a producer got but no processor took.

        With a ``reason`` their status becomes ``("failed", reason)``; without, it is kept.
        """
        self._untaken += len(messages)
        self.ack([], messages if reason is None else fail_all(messages, ("failed", reason)))

    async def handle_failed(self, failed: list[Message]) -> list[Message]:
        """Run the pipeline's ``handle_failed`` (if any) on ``failed``; return what to ack."""
        callback = self._handle_failed
        if callback is None:
            return failed
        try:
            result = await maybe_await(callback(failed, self.context))
        except Exception:
            logger.exception("%s: handle_failed raised", self.name)
            return failed
        if not isinstance(result, list) or len(result) != len(failed):
            logger.error("%s: handle_failed must return the list of messages it was given, "
                         "got: %r", self.name, result)
            return failed
        return result

    # -- counters --------------------------------------------------------------------------

    @property
    def taken(self) -> int:
        """Messages taken from the producers: by the processors, or failed untaken."""
        return self._untaken + sum(producer.taken for producer in self.producers)

    def stats(self) -> dict[str, Any]:
        """The counters :meth:`Pipeline.stats` reports (reading them changes nothing)."""
        done = self.handled + self.failed
        now = time.monotonic()
        older, newer = self._rate_marks
        if now - newer[0] >= RATE_WINDOW:
            older, newer = self._rate_marks = (newer, (now, done))
        then, done_then = older
        return {
            "handled": self.handled,
            "failed": self.failed,
            "in_flight": self.taken - done,
            "buffered": sum(producer.buffered for producer in self.producers),
            "rate": (done - done_then) / (now - then) if now > then else 0.0,
            "demand_exceeded": sum(producer.demand_exceeded for producer in self.producers),
            **({"workers": self.remote.offload.stats()} if self.remote is not None else {}),
        }

    def stage_stats(self) -> dict[str, list[dict[str, Any]]]:
        """The counters :meth:`Pipeline.stage_stats` reports (read only, no side effect)."""
        producers = [
            {"name": producer.name, "received": producer.received, "taken": producer.taken,
             "buffered": producer.buffered, "pending_demand": producer.pending_demand}
            for producer in self.producers]
        queued = asked = 0
        for processor in self.processors:
            queued += sum(len(chunk) for _, chunk in processor.inbox)
            queued += len(processor.current) if processor.current is not None else 0
            asked += sum(processor.outstanding.values())
        processors = [{
            "processor_key": "default",
            "received": sum(p.received for p in self.processors),
            "successful": sum(p.successful for p in self.processors),
            "failed": sum(p.failed for p in self.processors),
            "queued": queued,
            "demand": max(0, asked - queued)}]
        batchers = [{
            "batcher_key": name,
            "received": sum(stage.received for stage in batcher.stages),
            "batches": sum(stage.batches for stage in batcher.stages),
            "successful": sum(stage.successful for stage in batcher.stages),
            "failed": sum(stage.failed for stage in batcher.stages),
            "queued": sum(sum(map(len, stage.pending.values()))
                          + sum(len(batch) for batch, _ in stage.ready)
                          for stage in batcher.stages)}
            for name, batcher in self.batchers.items()]
        return {"producers": producers, "processors": processors, "batchers": batchers}


def _front_options(pipeline: Pipeline, workers: dict[str, Any], producers: list[Producer]
                   ) -> dict[str, Any]:
    """The workers options completed: the front's node (the producer's, unless given), the
    ``module:Class`` the workers import (the pipeline's class, unless given) and the front
    pipeline's options (``pipeline_options``: the workers run its processors and batchers)."""
    resolved = dict(workers)
    resolved["concurrency"] = pipeline.options["processors"]["default"]["concurrency"]
    resolved["pipeline_options"] = pipeline.options  # what the workers are told to run
    if resolved["node"] is None:
        resolved["node"] = next((getattr(producer, "node", None) for producer in producers
                                 if getattr(producer, "node", None) is not None), None)
        if resolved["node"] is None:
            raise ArgumentError("workers={...} needs the front's node: give workers={'node': node} "
                                "(the producer has none)")
    if resolved["pipeline"] is None:
        cls = type(pipeline)
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__ \
                or (cls.__name__ == "Pipeline" and cls.__module__.startswith("pybroadway.")):
            raise ArgumentError(
                f"workers import the pipeline class by module path, and {cls.__qualname__} "
                f"(in {cls.__module__}) cannot be imported so: define the Pipeline subclass in a "
                f"module of its own (not __main__, not inside a function), or name it with "
                f"workers={{'pipeline': 'module:Class'}}")
        resolved["pipeline"] = f"{cls.__module__}:{cls.__qualname__}"
    return resolved
