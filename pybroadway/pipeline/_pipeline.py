"""The public :class:`Pipeline`: callbacks, options, running, introspection."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from pybroadway.errors import CallbackError, StateError

from . import telemetry
from ._callback_log import Failure
from ._message import BatchInfo, Message
from ._offload import Offload
from ._producer import Producer
from ._topology import Callbacks, Topology, build
from .options import SCHEMA, Option, OptionsError, docs, module_and_options, validate

logger = logging.getLogger("pybroadway.pipeline")


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
    version: str | None = None
    max_restarts: int | None = None
    max_seconds: float | None = None
    offload: Any = None

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
        if self.options["version"] is None:
            self.options["version"] = code_version(type(self))
        offload = self.options["offload"]
        if offload is not None:  # its options by its own schema
            offload_class, offload_options = module_and_options(offload)
            self.options["offload"] = (offload_class,
                                       offload_class.validate_options(offload_options))
        if type(self).handle_message is Pipeline.handle_message and handle_message is None:
            raise CallbackError("a pipeline needs a handle_message callback")
        if (self.options["batchers"] and type(self).handle_batch is Pipeline.handle_batch
                and handle_batch is None):
            raise CallbackError("a pipeline with batchers needs a handle_batch callback")
        self._check_executors()
        self._topology: Topology | None = None
        self._stopped = False
        self._reloading = asyncio.Lock()
        self._swapped = asyncio.Event()  # set (and replaced) when a reload swaps topologies
        self._since = time.time()
        self._reloads = 0

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

    # -- running ---------------------------------------------------------------------------

    def _callbacks(self) -> Callbacks:
        return Callbacks(self.handle_message, self.prepare_messages, self.handle_batch,
                         self.handle_failed)

    async def start(self) -> None:
        """Start the producers, processors and batchers."""
        if self._topology is not None:
            raise StateError(f"pipeline {self.options['name']} was already started")
        self._topology = build(self.options, self._callbacks(), type(self))
        self._since = time.time()
        await self._topology.start()
        telemetry.emit(("broadway", "topology", "init"), {"system_time": time.time_ns()},
                       {"name": self.options["name"], "config": self.options})

    async def stop(self) -> None:
        """Stop gracefully (see the class docstring); returns when everything was acked.
        A reload under way finishes first."""
        self._running()
        if self._stopped:
            return
        self._stopped = True
        async with self._reloading:  # a reload under way finishes first; no other starts
            pass
        await self._running().stop()

    async def reload(self, successor: Pipeline) -> None:
        """Run the code of ``successor`` from now on, without stopping: a new version
        deployed in place, as the BEAM loads code. ``successor`` is a pipeline never started,
        made from the new code (``NewClass(**options)``); its callbacks and options replace
        this pipeline's, and this object stays the handle of the running pipeline.

        The producers keep running, with their sources (connections, a receiver and its
        clients, subscriptions) and what they buffer: a topology built from ``successor``
        takes them over. The processors running give back nothing, finish what they took
        (acknowledged within ``shutdown``, as in a stop) and end; then the new processors
        start. So no message is lost or handled twice, and messages of one partition are
        handled in order across the reload; handling pauses for as long as the old
        processors and batchers take to finish what they hold.

        With an ``offload`` (workers), the processing is replaced where it runs, a part at a
        time (:meth:`Offload.roll`), while the rest goes on.

        Raises (and this pipeline runs on as it was) :class:`OptionsError` if ``successor``
        changes the producer (its module, options or concurrency: a reload keeps it), the
        offload, or with one the processors' partitions; :class:`StateError` if this
        pipeline is not running or ``successor`` was started; and whatever starting
        ``successor``'s stages (or rolling the offload) raised.
        Reloads run one at a time; :meth:`stop` waits for one under way.
        """
        async with self._reloading:
            old = self._running()
            if self._stopped or successor._topology is not None:
                raise StateError(f"pipeline {self.options['name']} is stopping"
                                 if self._stopped else "the new pipeline was started already")
            self._check_successor(successor)
            began = time.monotonic()
            was = self.options["version"]
            if old.offloaded is not None:  # the processing runs elsewhere: it rolls there
                await old.offloaded.offload.roll(successor.options)
                old.outcomes.follow(successor.options["context"], successor.handle_failed)
                self._swap(successor, old)
            else:
                new = build(successor.options, successor._callbacks(), type(successor),
                            old.producers)
                try:
                    await new.start_stages()
                except BaseException:
                    await new.retire(None)
                    raise
                await old.retire(new)
                new.carry_over(old)
                self._swap(successor, new)
                new.start_processors()
        logger.info("%s: reloaded: version %s handles messages (was %s; the reload took %.0f "
                    "ms)", self.options["name"], self.options["version"], was,
                    (time.monotonic() - began) * 1000)

    def _swap(self, successor: Pipeline, topology: Topology) -> None:
        successor._topology = self._topology = topology
        self.options = successor.options
        self._since, self._reloads = time.time(), self._reloads + 1
        self._swapped.set()
        self._swapped = asyncio.Event()

    def _check_successor(self, successor: Pipeline) -> None:
        mine, theirs = self.options["producer"], successor.options["producer"]
        changed = [key for key in ("module", "concurrency") if mine[key] != theirs[key]]
        if changed:
            raise OptionsError(
                f"a reload keeps the producers: their {' and '.join(changed)} cannot change "
                f"(restart to change them)", changed[0], ("producer",), theirs[changed[0]])
        offload = successor.options["offload"]
        if self.options["offload"] != offload:
            raise OptionsError("a reload keeps the offload: it cannot come, go or change "
                               "(restart to change it)", "offload", (), offload)
        if offload is not None and _partitions(self.options) != _partitions(successor.options):
            raise OptionsError("a reload keeps the offload's partitions: the processors' "
                               "concurrency and partition_by cannot change (restart to change "
                               "them)", "processors", (), successor.options["processors"])

    async def stop_now(self) -> None:
        """Stop without draining, also when a graceful :meth:`stop` is draining (a second
        Ctrl-C): what is still held is acknowledged as failed with ``("failed",
        "shutdown")``, as when ``shutdown`` runs out."""
        topology = self._running()
        topology.cut_drain()
        self._stopped = True
        if self._reloading.locked():  # the reload's drain was cut: it ends soon
            async with self._reloading:
                pass
            topology = self._running()
            topology.cut_drain()
        await topology.stop()  # a stop under way is waited for

    async def __aenter__(self) -> Pipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _running(self) -> Topology:
        if self._topology is None:
            raise StateError(f"pipeline {self.options['name']} is not running")
        return self._topology

    async def wait_failure(self) -> str:
        """Wait until a part of the pipeline gave up and return why: its stages crashed more
        than ``max_restarts`` times within ``max_seconds``, or its offload could not be kept
        running. Stop the pipeline then (what it holds is failed). Reloads do not end it."""
        while True:
            failed = asyncio.ensure_future(self._running().failed())
            swapped = asyncio.ensure_future(self._swapped.wait())
            try:
                await asyncio.wait((failed, swapped), return_when=asyncio.FIRST_COMPLETED)
            finally:
                swapped.cancel()
                ended = failed.done()
                failed.cancel()
            if ended:
                return failed.result()

    def offloaded(self) -> Offload | None:
        """The running offload (built from the ``offload`` option), or None."""
        offloaded = self._running().offloaded
        return None if offloaded is None else offloaded.offload

    def push_messages(self, messages: Iterable[Any]) -> bool:
        """Push messages into one of the producers (round robin), like Broadway.push_messages.

        Returns what :meth:`Producer.push_messages` returns: whether that buffer has room.
        """
        return next(self._running().push_turn).push_messages(messages)

    # -- introspection ---------------------------------------------------------------------

    @property
    def producers(self) -> list[Producer]:
        """The running producer instances."""
        return list(self._running().producers)

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
        limiter = self._running().rate_limiter
        if limiter is None:
            return None
        return {"allowed_messages": limiter.allowed_messages, "interval": limiter.interval}

    def update_rate_limiting(self, *, allowed_messages: int | None = None,
                             interval: int | None = None) -> None:
        """Change the rate limit; takes effect from the next interval."""
        limiter = self._running().rate_limiter
        if limiter is None:
            raise StateError("rate limiting is not enabled for this pipeline")
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
        buffers; ``rate``: messages acknowledged per second over the last one to two seconds
        (since the start, at first); ``demand_exceeded``: times a producer delivered more
        than asked; ``restarts``: stages restarted after a crash. With an ``offload``,
        ``workers`` lists ``{"node", "handled", "failed",
        "in_flight", "rate"}`` per worker. ``version``: the version of the code that handles
        messages (the ``version`` option), ``since``: when it started to (seconds since the
        epoch), ``reloads``: how many times :meth:`reload` changed it. Reading it changes
        nothing, so any number of readers may poll it.
        """
        topology = self._topology
        version = {"version": self.options["version"], "since": self._since,
                   "reloads": self._reloads}
        if topology is None:
            return {"handled": 0, "failed": 0, "in_flight": 0, "buffered": 0, "rate": 0.0,
                    "demand_exceeded": 0, "restarts": 0, **version}
        return {**topology.stats(), **version}

    def stage_stats(self) -> dict[str, list[dict[str, Any]]]:
        """Counters of each stage group since the start, and what waits in it now.

        ``producers``, one entry per producer: ``name``, ``received`` (messages that came in),
        ``taken`` (by the processors), ``buffered``, ``pending_demand`` (asked through
        ``handle_demand``, not yet delivered). ``processors``, one entry per processor key:
        ``received``, ``successful`` (passed to a batcher or acknowledged), ``failed``,
        ``queued`` (delivered, not yet handled) and ``demand`` (asked of the producers, not
        yet delivered). ``batchers``, one per batcher: ``batcher_key``, ``received``,
        ``batches`` handled with their ``successful`` and ``failed`` messages, ``queued``
        (in batches not yet taken by a batch processor). Processors and batchers also count
        ``busy``: the seconds their processors (or batch processors) spent handling chunks
        (batches), all of them added up; over an interval, divided by its length and the
        concurrency, the share of time they were busy. Counters are kept per chunk or batch,
        not per message; reading them changes nothing.
        """
        topology = self._topology
        if topology is None:
            return {"producers": [], "processors": [], "batchers": []}
        return topology.stage_stats()

    def recent_failures(self) -> tuple[int, list[Failure]]:
        """The callbacks that raised lately: how many raised since the start, and the last
        few (at most :data:`~pybroadway.pipeline._callback_log.RECENT`, oldest first) as
        :class:`Failure` records (time, callback and stage, exception, message data)."""
        topology = self._topology
        if topology is None:
            return 0, []
        log = topology.outcomes.callback_log
        return log.raised_count, list(log.recent)


def _partitions(options: dict[str, Any]) -> tuple[int, bool]:
    processors = options["processors"]["default"]
    return processors["concurrency"], (processors["partition_by"] or options["partition_by"]
                                       ) is not None


def code_version(cls: type) -> str:
    """The default ``version`` of a pipeline of ``cls``: the first 12 hex digits of the
    SHA-256 of the file that defines it ("unknown" without one)."""
    path = getattr(sys.modules.get(cls.__module__), "__file__", None)
    try:
        with open(path or "", "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()[:12]
    except OSError:
        return "unknown"


Pipeline.__doc__ = (Pipeline.__doc__ or "") + textwrap.indent(docs(), "    ").lstrip()
