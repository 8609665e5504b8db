"""The topology of a running pipeline: :func:`build` wires its stages once from the options
and the callbacks; :class:`Topology` holds them, starts them under the stage supervisor,
drains them when the pipeline stops and reads their counters. No stage refers back to it:
each is given its inputs (its group's settings, the producers, the :class:`Outcomes`)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from pybroadway._aio import maybe_await

from ._batch_processor import BatchProcessor, BatchProcessorGroup
from ._batcher import Batcher
from ._callback_log import CallbackLog
from ._hold_watch import HoldWatch
from ._message import Message, fail_all
from ._offload import Offload, OffloadedProcessors, OffloadSetup
from ._outcomes import Outcomes
from ._processor import MessageHandler, Processor, ProcessorGroup, UnbatchedWatch
from ._producer import Producer
from ._rate_limiter import RateLimiter
from ._supervisor import Stage, StageSupervisor
from .options import module_and_options

logger = logging.getLogger("pybroadway.pipeline")

RATE_WINDOW = 1.0
"""Seconds: ``stats()["rate"]`` is measured over the last one to two of these."""

_SHUTDOWN = ("failed", "shutdown")


@dataclass(frozen=True)
class Callbacks:
    """The pipeline's callbacks (``prepare_messages`` and ``handle_failed`` are optional)."""

    handle_message: Callable[..., Any]
    prepare_messages: Callable[..., Any] | None
    handle_batch: Callable[..., Any]
    handle_failed: Callable[..., Any] | None


@dataclass(frozen=True)
class _ProducerSettings:
    """The :class:`~._producer.ProducerHost` the producers of one pipeline share."""

    partitions: int
    partition_by: Callable[..., int] | None
    transformer: Any
    rate_limiter: RateLimiter | None
    outcomes: Outcomes
    supervisor: StageSupervisor

    @property
    def callback_log(self) -> CallbackLog:
        return self.outcomes.callback_log

    def fail_untaken(self, messages: list[Any], reason: Any) -> None:
        self.outcomes.fail_untaken(messages, reason)

    def crash(self, producer: Producer, error: BaseException) -> None:
        self.supervisor.crash(_ProducerStage(producer, self.outcomes), error)


class _ProducerStage:
    """A producer as the supervisor sees it: a crash restarts it in place."""

    def __init__(self, producer: Producer, outcomes: Outcomes) -> None:
        self.producer = producer
        self.outcomes = outcomes

    def __repr__(self) -> str:
        return f"producer {self.producer.name}"

    def take_everything(self) -> list[Message]:
        leftovers = self.producer._restart()
        self.outcomes.untaken += len(leftovers)  # failed without being taken
        return leftovers


class Topology:
    """The stages of one running pipeline (made by :func:`build`)."""

    def __init__(self, name: str, outcomes: Outcomes, producers: list[Producer],
                 settings: _ProducerSettings, shutdown: float, hold_watch: HoldWatch) -> None:
        self.name = name
        self.settings = settings
        self.shutdown = shutdown
        self.outcomes = outcomes
        self.producers = producers
        self.push_turn: Iterator[Producer] = itertools.cycle(producers)
        self.rate_limiter = settings.rate_limiter
        self.supervisor = settings.supervisor
        self.processors: list[Processor] = []
        self.batchers: dict[Any, Batcher] = {}
        self.batch_processors: list[BatchProcessor] = []
        self.offloaded: OffloadedProcessors | None = None
        self.owned_executors: list[Executor] = []
        self.hold_watch = hold_watch  # of the coroutine callbacks that run in this loop
        self._stopped: asyncio.Future[None] | None = None
        self._cut = asyncio.Event()  # set by cut_drain: a drain under way ends where it is
        self._watch: asyncio.Task[None] | None = None
        # Two marks (time, messages done), the newer at most RATE_WINDOW old, so that the rate
        # covers the last one to two windows whoever reads it and however often.
        started = (time.monotonic(), 0)
        self._rate_marks = (started, started)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the producers, then the batch processors and the processors."""
        for producer in self.producers:
            await maybe_await(producer.on_start())
        await self.start_stages()
        self.start_processors()

    async def start_stages(self) -> None:
        """Start what takes nothing from the producers: the rate limiter, the offload, the
        batch processors."""
        if self.rate_limiter is not None:
            self.rate_limiter.start()
        self.hold_watch.start()
        if self.offloaded is not None:
            await self.offloaded.start()
        for batch_processor in self.batch_processors:
            self.supervisor.start(batch_processor)

    def start_processors(self) -> None:
        """Start the processors: their demand reaches the producers."""
        for processor in self.processors:
            self.supervisor.start(processor)
        self._watch = asyncio.create_task(self._stop_on_failure())

    async def retire(self, successor: Topology | None) -> None:
        """Stop for a reload, the producers left running: they hand this topology's
        processors nothing more and join ``successor`` (started but for its processors);
        what the processors took is drained within ``shutdown`` and acknowledged. With no
        successor (this topology is one that failed to start), the stages started stop."""
        self._stopped = asyncio.get_running_loop().create_future()
        if self._watch is not None:
            self._watch.cancel()
        try:
            if successor is None:
                await self._abandon(producers=False)
                await self._release()
                return
            for producer in self.producers:
                producer._hand_over(successor.settings, list(self.processors))
            await self._wind_down(self.shutdown, producers=False)
        finally:
            self.outcomes.callback_log.flush()
            self._stopped.set_result(None)

    def carry_over(self, retired: Topology) -> None:
        """Count what ``retired`` (the topology this one replaced) did as done here too: the
        pipeline's counters run on across a reload."""
        mine, theirs = self.outcomes, retired.outcomes
        mine.handled += theirs.handled
        mine.failed += theirs.failed
        mine.untaken += theirs.untaken
        self.supervisor.restarts += retired.supervisor.restarts
        self._rate_marks = retired._rate_marks

    async def _stop_on_failure(self) -> None:
        why = await self.failed()
        logger.error("%s: stopping: %s", self.name, why)
        await self.stop()

    async def failed(self) -> str:
        """Wait until a part of the pipeline gave up (the stages crashed too often, or the
        offload could not be kept running); return why."""
        waits = [asyncio.ensure_future(self.supervisor.failed())]
        if self.offloaded is not None:
            waits.append(asyncio.ensure_future(self.offloaded.offload.failed()))
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return done.pop().result()

    async def stop(self) -> None:
        """Drain within ``shutdown`` seconds, then fail what is left; stop the producers.
        Once: a second call waits for the first."""
        if self._stopped is not None:
            await asyncio.shield(self._stopped)
            return
        self._stopped = asyncio.get_running_loop().create_future()
        if self._watch is not None and self._watch is not asyncio.current_task():
            self._watch.cancel()
        try:
            await self._stop(self.shutdown)
        finally:
            self.outcomes.callback_log.flush()  # its counts would be lost with the loop
            self._stopped.set_result(None)

    async def _stop(self, timeout: float) -> None:
        for producer in self.producers:
            await maybe_await(producer.prepare_for_draining())
            producer._start_draining()
        await self._wind_down(timeout, producers=True)
        for producer in self.producers:
            await maybe_await(producer.on_stop())

    async def _wind_down(self, timeout: float, *, producers: bool) -> None:
        """Drain what the stages hold within ``timeout``, fail what is left (and what the
        ``producers`` hold, when they stop too), stop the stages."""
        drain = asyncio.ensure_future(self._drain())
        cut = asyncio.ensure_future(self._cut.wait())
        try:
            await asyncio.wait((drain, cut), timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
            if not drain.done():
                drain.cancel()
                await asyncio.wait((drain,))  # its cancellation is ours, not its failure
        if drain.cancelled() and not self._cut.is_set():  # who cut the drain says so
            logger.warning("%s: shutdown timed out; acknowledging what is left as failed",
                           self.name)
        elif not drain.cancelled():
            drain.result()
        await self._abandon(producers)
        await self._release()

    async def _release(self) -> None:
        if self.offloaded is not None:
            await self.offloaded.offload.stop()
        if self.rate_limiter is not None:
            self.rate_limiter.stop()
        self.hold_watch.stop()
        for executor in self.owned_executors:
            executor.shutdown(wait=False)

    def cut_drain(self) -> None:
        """Stop draining: the stop under way (or the next) fails what is left at once."""
        self._cut.set()

    async def _drain(self) -> None:
        if self.offloaded is not None:
            await self.offloaded.drain()
        await self.supervisor.finished(list(self.processors))
        for batcher in self.batchers.values():
            for stage in batcher.stages:
                stage.close()
        await self.supervisor.finished(list(self.batch_processors))

    async def _abandon(self, producers: bool) -> None:
        """Fail whatever is still held (nothing, after a drain that completed), the
        ``producers``' buffers too unless a reload hands them on."""
        await self.supervisor.stop()
        taken = [message for processor in self.processors
                 for message in processor.take_everything()]
        for batcher in self.batchers.values():
            for stage in batcher.stages:
                taken += stage.take_everything()
        if taken:
            self.outcomes.ack([], fail_all(taken, _SHUTDOWN))
        if self.offloaded is not None:
            self.offloaded.abandon(_SHUTDOWN[1])
        for producer in self.producers if producers else ():
            leftovers = producer._take_everything()
            if leftovers:
                self.outcomes.fail_untaken(leftovers, "shutdown")

    def stages(self) -> dict[str, list[Stage]]:
        """The stages by kind, as :meth:`StageSupervisor.kill` takes them."""
        return {"producer": [_ProducerStage(producer, self.outcomes)
                             for producer in self.producers],
                "processor": list(self.processors),
                "batcher": list(self.batchers.values()),
                "batch_processor": list(self.batch_processors)}

    # -- counters --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The counters :meth:`Pipeline.stats` reports (reading them changes nothing)."""
        outcomes = self.outcomes
        done = outcomes.handled + outcomes.failed
        now = time.monotonic()
        older, newer = self._rate_marks
        if now - newer[0] >= RATE_WINDOW:
            older, newer = self._rate_marks = (newer, (now, done))
        then, done_then = older
        taken = outcomes.untaken + sum(producer.taken for producer in self.producers)
        return {
            "handled": outcomes.handled,
            "failed": outcomes.failed,
            "in_flight": taken - done,
            "buffered": sum(producer.buffered for producer in self.producers),
            "rate": (done - done_then) / (now - then) if now > then else 0.0,
            "demand_exceeded": sum(producer.demand_exceeded for producer in self.producers),
            "restarts": self.supervisor.restarts,
            **({"workers": self.offloaded.offload.stats()}
               if self.offloaded is not None else {}),
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
            "busy": sum(p.busy for p in self.processors),
            "queued": queued,
            "demand": max(0, asked - queued)}]
        batchers = [{
            "batcher_key": name,
            "received": sum(stage.received for stage in batcher.stages),
            "batches": sum(stage.batches for stage in batcher.stages),
            "successful": sum(stage.successful for stage in batcher.stages),
            "failed": sum(stage.failed for stage in batcher.stages),
            "busy": sum(stage.busy for stage in batcher.stages),
            "queued": sum(sum(map(len, stage.pending.values()))
                          + sum(len(batch) for batch, _ in stage.ready)
                          for stage in batcher.stages)}
            for name, batcher in self.batchers.items()]
        return {"producers": producers, "processors": processors, "batchers": batchers}


# -- the builder ------------------------------------------------------------------------------

def build(options: dict[str, Any], callbacks: Callbacks, pipeline_class: type,
          running: list[Producer] | None = None) -> Topology:
    """Wire the stages of a pipeline of ``pipeline_class`` from its validated ``options``
    (in the running event loop; nothing starts yet); a reload gives the ``running``
    producers, which :meth:`Topology.retire` hands over."""
    name: str = options["name"]
    outcomes = Outcomes(name, options["context"], callbacks.handle_failed)
    producer_options = options["producer"]
    processor_options = options["processors"]["default"]
    partition_by = processor_options["partition_by"] or options["partition_by"]
    concurrency = processor_options["concurrency"]
    partitions = concurrency if partition_by is not None else 1

    producers: list[Producer] = []

    def serve_producers() -> None:  # the rate limit was refilled
        for producer in producers:
            producer._serve_all()

    limit = producer_options["rate_limiting"]
    rate_limiter = None if limit is None else RateLimiter(
        limit["allowed_messages"], limit["interval"], serve_producers)
    settings = _ProducerSettings(
        partitions, partition_by, producer_options["transformer"], rate_limiter, outcomes,
        StageSupervisor(name, outcomes, options["max_restarts"], options["max_seconds"]))
    cls, kwargs = module_and_options(producer_options["module"])
    for index in range(producer_options["concurrency"] if running is None else 0):
        producer = cls(**kwargs)
        producer._attach(settings, f"{name}.Broadway.Producer_{index}")
        producers.append(producer)
    producers += running or ()
    # With an offload, only handle_failed runs here.
    watched = ({"handle_failed": callbacks.handle_failed} if options["offload"] is not None
               else vars(callbacks))
    topology = Topology(name, outcomes, producers, settings, options["shutdown"] / 1000,
                        HoldWatch(outcomes.callback_log, watched))

    if options["offload"] is not None:
        offload_class, offload_options = module_and_options(options["offload"])
        offload = cast(type[Offload], offload_class)(dict(offload_options), OffloadSetup(
            name, pipeline_class, options, partitions, concurrency, producers))
        topology.offloaded = OffloadedProcessors(offload, producers, partitions, outcomes)
        return topology

    topology.batchers = {
        key: Batcher(key, batcher, batcher["partition_by"] or options["partition_by"])
        for key, batcher in options["batchers"].items()}
    group = ProcessorGroup(
        name, producers, processor_options["max_demand"], processor_options["min_demand"],
        MessageHandler(callbacks.handle_message, callbacks.prepare_messages,
                       options["context"], outcomes.callback_log),
        _executor(processor_options, f"{name}.processor", topology.owned_executors),
        topology.batchers, outcomes, UnbatchedWatch(name, not topology.batchers))
    topology.processors = [Processor(group, index, index if partition_by is not None else 0)
                           for index in range(concurrency)]
    for key, batcher in topology.batchers.items():
        batch_group = BatchProcessorGroup(
            name, key, callbacks.handle_batch, options["context"],
            _executor(batcher.options, f"{name}.batch_processor_{key}",
                      topology.owned_executors), outcomes)
        for stage in batcher.stages:
            # one batch processor per stage of a partitioned batcher, else `concurrency`
            count = batcher.options["concurrency"] if stage.partition is None else 1
            topology.batch_processors += [
                BatchProcessor(batch_group, stage,
                               index if stage.partition is None else stage.partition)
                for index in range(count)]
    return topology


def _executor(options: dict[str, Any], label: str, owned: list[Executor]) -> Executor | None:
    executor = options["executor"]
    if executor == "thread":
        pool = ThreadPoolExecutor(options["concurrency"], thread_name_prefix=label)
        owned.append(pool)
        return pool
    return cast("Executor | None", executor)
