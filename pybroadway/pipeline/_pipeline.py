"""The pipeline: options, topology, processors, batchers, draining, stats."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, cast

from pybroadway._aio import maybe_await

from . import telemetry
from ._message import BatchInfo, Message, ack_messages
from ._producer import Producer, _RateLimiter
from .options import SCHEMA, Option, OptionsError, docs, validate

logger = logging.getLogger("pybroadway.pipeline")

_YIELD_EVERY = 1024  # messages a processor handles back to back before letting others run
_SHUTDOWN = ("failed", "shutdown")

_PROCESSOR_START = ("broadway", "processor", "start")
_PROCESSOR_STOP = ("broadway", "processor", "stop")
_MESSAGE_EXCEPTION = ("broadway", "processor", "message", "exception")
_BATCH_START = ("broadway", "batch_processor", "start")
_BATCH_STOP = ("broadway", "batch_processor", "stop")
_BATCH_EXCEPTION = ("broadway", "batch_processor", "exception")


def _fail_all(messages: list[Message], status: Any) -> list[Message]:
    for message in messages:
        message.status = status
    return messages


class _Processor:
    """One processor: an inbox of chunks its producers delivered, and its demand per producer."""

    __slots__ = ("current", "inbox", "index", "outstanding", "partition", "waiter")

    def __init__(self, index: int, partition: int) -> None:
        self.index = index
        self.partition = partition
        self.inbox: deque[tuple[Producer, list[Message]]] = deque()
        self.outstanding: dict[Producer, int] = {}
        self.waiter: asyncio.Future[None] | None = None
        self.current: list[Message] | None = None

    def deliver(self, producer: Producer, messages: list[Message]) -> None:
        self.inbox.append((producer, messages))
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _BatchStage:
    """Accumulates one batcher's (or one batcher partition's) messages into batches by key."""

    def __init__(self, name: Any, partition: int | None, options: dict[str, Any],
                 workers: int) -> None:
        self.name = name
        self.partition = partition
        self.batch_size: int = options["batch_size"]
        self.batch_timeout: float = options["batch_timeout"] / 1000
        self.pending: dict[Any, list[Message]] = {}
        self.timers: dict[Any, asyncio.TimerHandle] = {}
        self.ready: deque[tuple[list[Message], BatchInfo]] = deque()
        self.limit = 2 * workers
        self.has_work = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.closed = False
        self.current: dict[int, list[Message]] = {}
        self._loop = asyncio.get_running_loop()

    def add(self, messages: list[Message]) -> None:
        pending = self.pending
        size = self.batch_size
        for message in messages:
            key = message.batch_key
            batch = pending.get(key)
            if batch is None:
                batch = pending[key] = []
                self.timers[key] = self._loop.call_later(self.batch_timeout, self._timeout, key)
            batch.append(message)
            if len(batch) >= size:
                self._emit(key, "size")
            elif message.batch_mode == "flush":
                self._emit(key, "flush")

    def _timeout(self, key: Any) -> None:
        if key in self.pending:
            self._emit(key, "timeout")

    def _emit(self, key: Any, trigger: Any) -> None:
        batch = self.pending.pop(key)
        self.timers.pop(key).cancel()
        self.ready.append((batch, BatchInfo(self.name, key, self.partition, len(batch), trigger)))
        self.has_work.set()
        if len(self.ready) >= self.limit:
            self.room.clear()

    def take(self) -> tuple[list[Message], BatchInfo] | None:
        if not self.ready:
            self.has_work.clear()
            return None
        batch = self.ready.popleft()
        if len(self.ready) < self.limit:
            self.room.set()
        return batch

    def close(self) -> None:
        """Flush every pending batch; workers stop once the ready batches are handled."""
        for key in list(self.pending):
            self._emit(key, "flush")
        self.closed = True
        self.has_work.set()

    def take_everything(self) -> list[Message]:
        leftovers = [m for batch in self.pending.values() for m in batch]
        leftovers += [m for batch, _ in self.ready for m in batch]
        leftovers += [m for batch in self.current.values() for m in batch]
        for timer in self.timers.values():
            timer.cancel()
        self.pending.clear()
        self.timers.clear()
        self.ready.clear()
        self.current.clear()
        return leftovers


class _Batcher:
    """A named batcher: one stage, or one stage per partition when partition_by is set."""

    def __init__(self, name: Any, options: dict[str, Any], partition_by: Any) -> None:
        self.name = name
        self.options = options
        self.partition_by = partition_by
        concurrency = options["concurrency"]
        if partition_by is None:
            self.stages = [_BatchStage(name, None, options, concurrency)]
        else:
            self.stages = [_BatchStage(name, i, options, 1) for i in range(concurrency)]

    def add(self, messages: list[Message]) -> None:
        stages = self.stages
        if len(stages) == 1:
            stages[0].add(messages)
            return
        routed: list[list[Message]] = [[] for _ in stages]
        partition_by = self.partition_by
        for message in messages:
            routed[partition_by(message) % len(stages)].append(message)
        for stage, part in zip(stages, routed, strict=True):
            if part:
                stage.add(part)

    async def wait_room(self) -> None:
        for stage in self.stages:
            if not stage.room.is_set():
                await stage.room.wait()


class _Core:
    """The running state of one pipeline: stages, tasks and counters."""

    def __init__(self, pipeline: Pipeline) -> None:
        options = pipeline.options
        self.pipeline = pipeline
        self.name: str = options["name"]
        self.context = options["context"]
        producer_options = options["producer"]
        processor_options = options["processors"]["default"]
        self.processor_options = processor_options
        self.transformer = producer_options["transformer"]
        self.partition_by = processor_options["partition_by"] or options["partition_by"]
        self.taken = self.handled = self.failed = self.demand_exceeded = 0
        self.owned_executors: list[Executor] = []

        module = producer_options["module"]
        cls, kwargs = module if isinstance(module, tuple) else (module, {})
        concurrency = processor_options["concurrency"]
        partitions = concurrency if self.partition_by is not None else 1
        self.producers: list[Producer] = []
        for index in range(producer_options["concurrency"]):
            producer = cls(**kwargs)
            producer._attach(self, f"{self.name}.Broadway.Producer_{index}", partitions)
            self.producers.append(producer)
        limit = producer_options["rate_limiting"]
        self.rate_limiter = (
            _RateLimiter(limit["allowed_messages"], limit["interval"], self.producers)
            if limit is not None else None
        )
        self.processors = [
            _Processor(index, index if self.partition_by is not None else 0)
            for index in range(concurrency)
        ]
        self.processor_executor = self._executor(processor_options, "processor")
        self.batchers = {
            name: _Batcher(name, batcher_options,
                           batcher_options["partition_by"] or options["partition_by"])
            for name, batcher_options in options["batchers"].items()
        }
        self.batch_executors = {
            name: self._executor(batcher.options, f"batch_processor_{name}")
            for name, batcher in self.batchers.items()
        }
        self.processor_tasks: list[asyncio.Task[None]] = []
        self.batch_tasks: list[asyncio.Task[None]] = []
        self.push_turn = itertools.cycle(self.producers)
        self.rate_mark = (time.monotonic(), 0)

    def _executor(self, options: dict[str, Any], label: str) -> Executor | None:
        executor = options["executor"]
        if executor == "thread":
            executor = ThreadPoolExecutor(options["concurrency"],
                                          thread_name_prefix=f"{self.name}.{label}")
            self.owned_executors.append(executor)
        return executor

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for producer in self.producers:
            await maybe_await(producer.on_start())
        if self.rate_limiter is not None:
            self.rate_limiter.start()
        for batcher in self.batchers.values():
            for stage in batcher.stages:
                workers = batcher.options["concurrency"] if stage.partition is None else 1
                for index in range(workers):
                    worker_index = index if stage.partition is None else stage.partition
                    self.batch_tasks.append(self._spawn(self._run_batch_processor(
                        batcher.name, stage, worker_index)))
        self.processor_tasks = [self._spawn(self._run_processor(p)) for p in self.processors]

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        task.add_done_callback(self._check_task)
        return task

    def _check_task(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: a stage crashed", self.name, exc_info=task.exception())

    async def stop(self, timeout: float) -> None:
        for producer in self.producers:
            await maybe_await(producer.prepare_for_draining())
            producer._start_draining()
        try:
            await asyncio.wait_for(self._drain(), timeout)
        except TimeoutError:
            logger.warning("%s: shutdown timed out; acknowledging what is left as failed",
                           self.name)
            await self._abandon()
        if self.rate_limiter is not None:
            self.rate_limiter.stop()
        for executor in self.owned_executors:
            executor.shutdown(wait=False)
        for producer in self.producers:
            await maybe_await(producer.on_stop())

    async def _drain(self) -> None:
        await asyncio.gather(*self.processor_tasks)
        for batcher in self.batchers.values():
            for stage in batcher.stages:
                stage.close()
        await asyncio.gather(*self.batch_tasks)

    async def _abandon(self) -> None:
        tasks = self.processor_tasks + self.batch_tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        taken: list[Message] = []
        for processor in self.processors:
            if processor.current is not None:
                taken += processor.current
            for _, chunk in processor.inbox:
                taken += chunk
            processor.inbox.clear()
        for batcher in self.batchers.values():
            for stage in batcher.stages:
                taken += stage.take_everything()
        self.ack([], _fail_all(taken, _SHUTDOWN))
        for producer in self.producers:
            self.fail_untaken(producer._take_everything(), "shutdown")

    # -- acknowledgement -------------------------------------------------------------------

    def ack(self, successful: list[Message], failed: list[Message]) -> None:
        self.handled += len(successful)
        self.failed += len(failed)
        ack_messages(successful, failed)

    def fail_untaken(self, messages: list[Message], reason: Any) -> None:
        """Acknowledge as failed messages a producer got but no processor took.

        With a ``reason`` their status becomes ``("failed", reason)``; without, it is kept.
        """
        self.taken += len(messages)
        self.ack([], messages if reason is None else _fail_all(messages, ("failed", reason)))

    async def handle_failed(self, failed: list[Message]) -> list[Message]:
        callback = self.pipeline.handle_failed
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

    # -- processors ------------------------------------------------------------------------

    async def _run_processor(self, processor: _Processor) -> None:
        options = self.processor_options
        max_demand, min_demand = options["max_demand"], options["min_demand"]
        producers = self.producers
        loop = asyncio.get_running_loop()
        for producer in producers:
            processor.outstanding[producer] = max_demand
            producer._ask(processor, max_demand)
        inbox = processor.inbox
        since_yield = 0
        while True:
            if not inbox:
                if all(producer._drained_for(processor) for producer in producers):
                    return
                processor.waiter = loop.create_future()
                await processor.waiter
                processor.waiter = None
                since_yield = 0
                continue
            producer, messages = inbox.popleft()
            processor.current = messages
            await self._handle_chunk(processor, messages)
            left = processor.outstanding[producer] - len(messages)
            if left <= min_demand:
                producer._ask(processor, max_demand - left)
                left = max_demand
            processor.outstanding[producer] = left
            since_yield += len(messages)
            if since_yield >= _YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)

    async def _handle_chunk(self, processor: _Processor, messages: list[Message]) -> None:
        observed = telemetry.handlers and (
            _PROCESSOR_START in telemetry.handlers or _PROCESSOR_STOP in telemetry.handlers
            or _MESSAGE_EXCEPTION in telemetry.handlers)
        if observed:
            started = time.monotonic_ns()
            meta = {"name": self.name, "processor_key": "default", "index": processor.index,
                    "messages": messages}
            telemetry.emit(_PROCESSOR_START,
                           {"system_time": time.time_ns(), "monotonic_time": started}, meta)
        pipeline = self.pipeline
        if self.processor_executor is not None:
            ok, failed = await asyncio.get_running_loop().run_in_executor(
                self.processor_executor, pipeline._process_sync, messages)
        elif pipeline._async_processing:
            ok, failed = await pipeline._process_async(messages)
        else:
            ok, failed = pipeline._process_sync(messages)
        if observed:
            for message in failed:
                status = message.status
                if status.__class__ is tuple and status[0] == "error":
                    telemetry.emit(_MESSAGE_EXCEPTION, {"monotonic_time": time.monotonic_ns()},
                                   {**meta, "message": message, "error": status[1]})
        routed = self._route(ok, failed) if self.batchers else None
        if failed:
            failed = await self.handle_failed(failed)
        if routed is None:
            self.ack(ok, failed)
        else:
            for batcher, batch in routed:
                batcher.add(batch)
            if failed:
                self.ack([], failed)
        processor.current = None
        if observed:
            _emit_stop(_PROCESSOR_STOP, started, meta, ok, failed)
        if routed is not None:
            for batcher, _ in routed:
                await batcher.wait_room()

    def _route(self, ok: list[Message], failed: list[Message]) -> list[tuple[_Batcher, list]]:
        """Group successful messages per batcher; those naming no known batcher fail."""
        batchers = self.batchers
        groups: dict[Any, list[Message]] = {}
        for message in ok:
            name = message.batcher
            group = groups.get(name)
            if group is None:
                if name not in batchers:
                    message.status = ("error", RuntimeError(
                        f"message was set to unknown batcher {name!r}; "
                        f"the known batchers are {list(batchers)!r}"))
                    failed.append(message)
                    continue
                group = groups[name] = []
            group.append(message)
        return [(batchers[name], group) for name, group in groups.items()]

    # -- batch processors ------------------------------------------------------------------

    async def _run_batch_processor(self, name: Any, stage: _BatchStage, index: int) -> None:
        while True:
            taken = stage.take()
            if taken is None:
                if stage.closed:
                    return
                await stage.has_work.wait()
                continue
            messages, info = taken
            stage.current[index] = messages
            await self._handle_batch(name, index, messages, info)
            del stage.current[index]

    async def _handle_batch(self, name: Any, index: int, messages: list[Message],
                            info: BatchInfo) -> None:
        observed = telemetry.handlers and (
            _BATCH_START in telemetry.handlers or _BATCH_STOP in telemetry.handlers
            or _BATCH_EXCEPTION in telemetry.handlers)
        if observed:
            started = time.monotonic_ns()
            meta = {"name": self.name, "batcher": name, "index": index, "messages": messages,
                    "batch_info": info}
            telemetry.emit(_BATCH_START,
                           {"system_time": time.time_ns(), "monotonic_time": started}, meta)
        pipeline = self.pipeline
        executor = self.batch_executors[name]
        try:
            if executor is not None:
                result = await asyncio.get_running_loop().run_in_executor(
                    executor, pipeline.handle_batch, name, messages, info, self.context)
            else:
                result = await maybe_await(
                    pipeline.handle_batch(name, messages, info, self.context))
            if not isinstance(result, list) or any(
                    not isinstance(message, Message) for message in result):
                raise TypeError(f"handle_batch must return a list of messages, got: {result!r}")
        except Exception as error:
            if observed:
                telemetry.emit(_BATCH_EXCEPTION, {"monotonic_time": time.monotonic_ns()},
                               {**meta, "error": error})
            result = _fail_all(messages, ("error", error))
        ok = [message for message in result if message.status == "ok"]
        failed = [message for message in result if message.status != "ok"]
        if failed:
            failed = await self.handle_failed(failed)
        self.ack(ok, failed)
        if observed:
            _emit_stop(_BATCH_STOP, started, meta, ok, failed)


def _emit_stop(event: telemetry.Event, started: int, meta: dict[str, Any],
               ok: list[Message], failed: list[Message]) -> None:
    """The ``stop`` event of a processor's or a batch processor's unit of work."""
    now = time.monotonic_ns()
    telemetry.emit(
        event,
        {"duration": now - started, "monotonic_time": now, "successful": len(ok),
         "failed": len(failed)},
        {**meta, "successful_messages_list": ok, "failed_messages_list": failed})


class Pipeline:
    """A Broadway pipeline: subclass it (or pass callbacks) and configure it with options.

    Callbacks, each a plain method/function or a coroutine function:

    * ``handle_message(processor, message, context) -> Message`` (required)
    * ``handle_batch(batcher, messages, batch_info, context) -> list[Message]`` (required when
      batchers are configured)
    * ``prepare_messages(messages, context) -> list[Message]`` (optional; runs on each chunk a
      processor takes, before handle_message)
    * ``handle_failed(messages, context) -> list[Message]`` (optional)

    An exception in a callback marks the messages it was handling failed with
    ``("error", exception)``; the pipeline keeps running. Options are keyword arguments or
    class attributes with Broadway's names (keyword arguments win)::

        pipeline = MyPipeline(producer={"module": (MyProducer, {}), "concurrency": 1},
                              processors={"default": {"concurrency": 4}},
                              batchers={"default": {"batch_size": 100}})
        async with pipeline:
            ...

    Run it with ``async with pipeline:`` or ``await pipeline.start()`` /
    ``await pipeline.stop()``. Stopping is graceful: producers take no new work, what is in
    flight is processed, batches are flushed and acknowledged, all within ``shutdown``
    milliseconds; anything left then is acknowledged as failed with ``("failed",
    "shutdown")``.

    Options:

    """

    producer: dict[str, Any] | None = None
    processors: dict[str, Any] | None = None
    batchers: dict[str, Any] | None = None
    context: Any = None
    shutdown: int | None = None
    partition_by: Callable[[Message], int] | None = None
    name: str | None = None

    prepare_messages: Callable[..., Any] | None = None
    handle_failed: Callable[..., Any] | None = None

    def __init__(
        self,
        *,
        handle_message: Callable[..., Any] | None = None,
        handle_batch: Callable[..., Any] | None = None,
        prepare_messages: Callable[..., Any] | None = None,
        handle_failed: Callable[..., Any] | None = None,
        **options: Any,
    ) -> None:
        """Validate the options (raising :class:`OptionsError`) and take the callbacks."""
        for callback_name, callback in (
            ("handle_message", handle_message), ("handle_batch", handle_batch),
            ("prepare_messages", prepare_messages), ("handle_failed", handle_failed),
        ):
            if callback is not None:
                setattr(self, callback_name, callback)
        merged = {key: getattr(type(self), key) for key in SCHEMA
                  if getattr(type(self), key, None) is not None}
        merged.update(options)
        merged.setdefault("name", type(self).__name__)
        self.options: dict[str, Any] = validate(merged)
        if type(self).handle_message is Pipeline.handle_message and handle_message is None:
            raise TypeError("a pipeline needs a handle_message callback")
        if (self.options["batchers"] and type(self).handle_batch is Pipeline.handle_batch
                and handle_batch is None):
            raise TypeError("a pipeline with batchers needs a handle_batch callback")
        self._async_processing = inspect.iscoroutinefunction(self.handle_message) or (
            inspect.iscoroutinefunction(self.prepare_messages))
        self._check_executors()
        self._core: _Core | None = None
        self._stopped = False

    def _check_executors(self) -> None:
        stages: list[tuple[tuple[str, str], Any, tuple[str, ...]]] = [
            (("processors", "default"), self.options["processors"]["default"],
             ("handle_message", "prepare_messages"))]
        stages += [(("batchers", name), batcher, ("handle_batch",))
                   for name, batcher in self.options["batchers"].items()]
        for path, stage_options, callbacks in stages:
            executor = stage_options["executor"]
            if executor is None:
                continue
            for callback in callbacks:
                if inspect.iscoroutinefunction(getattr(self, callback)):
                    raise OptionsError(
                        f"invalid value for :executor option: expected None when {callback} "
                        f"is a coroutine function, got: {executor!r}",
                        "executor", path, executor)

    # -- callbacks -------------------------------------------------------------------------

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        """Handle one message; return it (changed or not). Must be overridden."""
        raise NotImplementedError

    def handle_batch(self, batcher: Any, messages: list[Message], batch_info: BatchInfo,
                     context: Any) -> list[Message]:
        """Handle a batch; return its messages. Must be overridden when using batchers."""
        raise NotImplementedError

    def _process_sync(self, messages: list[Message]) -> tuple[list[Message], list[Message]]:
        context = self.options["context"]
        if self.prepare_messages is not None:
            try:
                messages = self._check_prepared(self.prepare_messages(messages, context),
                                                messages)
            except Exception as error:
                return [], _fail_all(messages, ("error", error))
        handle = self.handle_message
        ok: list[Message] = []
        failed: list[Message] = []
        keep, drop = ok.append, failed.append
        for message in messages:
            try:
                result = handle("default", message, context)
                if result.__class__ is not Message and not isinstance(result, Message):
                    raise TypeError(f"handle_message must return a Message, got: {result!r}")
                if result.status == "ok":
                    keep(result)
                else:
                    drop(result)
            except Exception as error:
                message.status = ("error", error)
                drop(message)
        return ok, failed

    async def _process_async(self, messages: list[Message]
                             ) -> tuple[list[Message], list[Message]]:
        context = self.options["context"]
        if self.prepare_messages is not None:
            try:
                prepared = await maybe_await(self.prepare_messages(messages, context))
                messages = self._check_prepared(prepared, messages)
            except Exception as error:
                return [], _fail_all(messages, ("error", error))
        handle = self.handle_message
        ok: list[Message] = []
        failed: list[Message] = []
        for message in messages:
            try:
                result = await maybe_await(handle("default", message, context))
                if not isinstance(result, Message):
                    raise TypeError(f"handle_message must return a Message, got: {result!r}")
                (ok if result.status == "ok" else failed).append(result)
            except Exception as error:
                message.status = ("error", error)
                failed.append(message)
        return ok, failed

    @staticmethod
    def _check_prepared(prepared: Any, messages: list[Message]) -> list[Message]:
        if not isinstance(prepared, list) or len(prepared) != len(messages):
            raise TypeError("prepare_messages must return a list of as many messages as it "
                            f"was given ({len(messages)}), got: {prepared!r}")
        return prepared

    # -- running ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the producers, processors and batchers."""
        if self._core is not None:
            raise RuntimeError(f"pipeline {self.options['name']} was already started")
        self._core = _Core(self)
        await self._core.start()
        telemetry.emit(("broadway", "topology", "init"), {"system_time": time.time_ns()},
                       {"name": self.options["name"], "config": self.options})

    async def stop(self) -> None:
        """Stop gracefully (see the class docstring); returns when everything was acked."""
        core = self._require_core()
        if self._stopped:
            return
        self._stopped = True
        await core.stop(self.options["shutdown"] / 1000)

    async def __aenter__(self) -> Pipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _require_core(self) -> _Core:
        if self._core is None:
            raise RuntimeError(f"pipeline {self.options['name']} is not running")
        return self._core

    def push_messages(self, messages: Iterable[Any]) -> bool:
        """Push messages into one of the producers (round robin), like Broadway.push_messages.

        Returns what :meth:`Producer.push_messages` returns: whether that buffer has room.
        """
        return next(self._require_core().push_turn).push_messages(messages)

    # -- introspection ---------------------------------------------------------------------

    @property
    def producers(self) -> list[Producer]:
        """The running producer instances."""
        return list(self._require_core().producers)

    def producer_names(self) -> list[str]:
        """Names of the producer instances, ``"<name>.Broadway.Producer_<i>"``."""
        name = self.options["name"]
        return [f"{name}.Broadway.Producer_{i}"
                for i in range(self.options["producer"]["concurrency"])]

    def topology(self) -> dict[str, list[dict[str, Any]]]:
        """Stage groups with their names and concurrency, as Broadway.topology/1."""
        name = self.options["name"]
        return {
            "producers": [{"name": f"{name}.Broadway.Producer",
                           "concurrency": self.options["producer"]["concurrency"]}],
            "processors": [{"name": f"{name}.Broadway.Processor_default",
                            "processor_key": "default",
                            "concurrency": self.options["processors"]["default"]["concurrency"]}],
            "batchers": [{"batcher_key": key, "name": f"{name}.Broadway.BatchProcessor_{key}",
                          "batcher_name": f"{name}.Broadway.Batcher_{key}",
                          "concurrency": batcher["concurrency"]}
                         for key, batcher in self.options["batchers"].items()],
        }

    def get_rate_limiting(self) -> dict[str, int] | None:
        """The current rate limit ``{"allowed_messages", "interval"}``, or None if unlimited."""
        limiter = self._require_core().rate_limiter
        if limiter is None:
            return None
        return {"allowed_messages": limiter.allowed_messages, "interval": limiter.interval}

    def update_rate_limiting(self, *, allowed_messages: int | None = None,
                             interval: int | None = None) -> None:
        """Change the rate limit; takes effect from the next interval."""
        limiter = self._require_core().rate_limiter
        if limiter is None:
            raise RuntimeError("rate limiting is not enabled for this pipeline")
        schema = cast(dict[str, Option],
                      SCHEMA["producer"].keys["rate_limiting"].keys)  # type: ignore[index]
        current = {
            "allowed_messages": limiter.allowed_messages if allowed_messages is None
            else allowed_messages,
            "interval": limiter.interval if interval is None else interval,
        }
        checked = validate(current, schema, ("producer", "rate_limiting"))
        limiter.allowed_messages = checked["allowed_messages"]
        limiter.interval = checked["interval"]

    def stats(self) -> dict[str, Any]:
        """A snapshot of counters.

        ``handled``/``failed``: messages acknowledged as successful/failed; ``in_flight``:
        taken from the producers and not yet acknowledged; ``buffered``: in the producers'
        buffers; ``rate``: messages acknowledged per second since the previous ``stats()``
        call (or the start); ``demand_exceeded``: times a producer delivered more than asked.
        """
        core = self._core
        if core is None:
            return {"handled": 0, "failed": 0, "in_flight": 0, "buffered": 0, "rate": 0.0,
                    "demand_exceeded": 0}
        done = core.handled + core.failed
        now = time.monotonic()
        then, done_then = core.rate_mark
        core.rate_mark = (now, done)
        return {
            "handled": core.handled,
            "failed": core.failed,
            "in_flight": core.taken - done,
            "buffered": sum(producer.buffered for producer in core.producers),
            "rate": (done - done_then) / (now - then) if now > then else 0.0,
            "demand_exceeded": core.demand_exceeded,
        }


Pipeline.__doc__ = (Pipeline.__doc__ or "") + docs()
