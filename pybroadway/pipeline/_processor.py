"""The processors: each asks the producers for messages, runs the pipeline's
``prepare_messages`` and ``handle_message`` on them, and hands the successful ones to the
batchers (or acknowledges them when there are none)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import reprlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from time import monotonic  # a name, not an attribute: read per chunk
from typing import TYPE_CHECKING, Any

from pybroadway._aio import maybe_await
from pybroadway.errors import CallbackError

from . import telemetry
from ._callback_log import HOLD_LIMIT, CallbackLog
from ._message import Message, fail_all
from ._outcomes import Outcomes

if TYPE_CHECKING:
    from ._batcher import Batcher
    from ._producer import Producer

logger = logging.getLogger("pybroadway.pipeline")

# A processor lets the other tasks run after this many messages or seconds back to back (the
# time for a slow plain handle_message, which holds the loop while it runs).
_YIELD_EVERY = 1024
_YIELD_AFTER = 0.02

_PROCESSOR_START = ("broadway", "processor", "start")
_PROCESSOR_STOP = ("broadway", "processor", "stop")
_MESSAGE_EXCEPTION = ("broadway", "processor", "message", "exception")


class MessageHandler:
    """The pipeline's ``prepare_messages`` and ``handle_message``, applied to one chunk.

    Both split the chunk into ``(successful, failed)``: :meth:`run` for plain callbacks (in
    the event loop or an executor), :meth:`run_async` when one of them is a coroutine
    function (:attr:`is_async`). What the callbacks do wrong goes to ``log``.
    """

    def __init__(self, handle_message: Callable[..., Any],
                 prepare_messages: Callable[..., Any] | None, context: Any,
                 log: CallbackLog) -> None:
        self.handle_message = handle_message
        self.prepare_messages = prepare_messages
        self.context = context
        self.log = log
        self.is_async = (inspect.iscoroutinefunction(handle_message)
                         or inspect.iscoroutinefunction(prepare_messages))

    def _raised(self, message: Message, error: Exception) -> Message:
        """``handle_message`` raised: the message fails with the error."""
        self.log.raised("handle_message", error, f"on {reprlib.repr(message.data)}",
                        data=message.data)
        message.status = ("error", error)
        return message

    def _not_a_message(self, message: Message, result: Any) -> Message:
        """``handle_message`` returned something else: the message fails with a reason that
        says so."""
        message.status = ("error", CallbackError(
            self.log.returned("handle_message", result, "a Message")))
        return message

    def _prepared(self, prepared: Any, messages: list[Message]
                  ) -> tuple[list[Message], list[Message]] | None:
        """None if ``prepared`` is what ``prepare_messages`` must return, else the chunk
        failed."""
        if isinstance(prepared, list) and len(prepared) == len(messages):
            return None
        reason = self.log.returned("prepare_messages", prepared,
                                   f"a list of as many messages as it was given "
                                   f"({len(messages)})")
        return [], fail_all(messages, ("error", CallbackError(reason)))

    def _prepare_raised(self, messages: list[Message], error: Exception
                        ) -> tuple[list[Message], list[Message]]:
        self.log.raised("prepare_messages", error, f"on a chunk of {len(messages)}",
                        data=messages[0].data if messages else None)
        return [], fail_all(messages, ("error", error))

    def run(self, messages: list[Message], in_loop: bool = False
            ) -> tuple[list[Message], list[Message]]:
        """Handle ``messages`` with plain callbacks; ``in_loop``: in the event loop, where a
        callback that holds it too long is warned about (measured per chunk, never per
        message)."""
        if self.prepare_messages is not None:
            started = monotonic()
            try:
                prepared = self.prepare_messages(messages, self.context)
            except Exception as error:
                return self._prepare_raised(messages, error)
            if in_loop and monotonic() - started > HOLD_LIMIT:
                self.log.held("prepare_messages", started, "a chunk", len(messages))
            refused = self._prepared(prepared, messages)
            if refused is not None:
                return refused
            messages = prepared
        handle = self.handle_message
        context = self.context
        ok: list[Message] = []
        failed: list[Message] = []
        keep, drop = ok.append, failed.append
        started = monotonic()
        for message in messages:
            try:
                result = handle("default", message, context)
            except Exception as error:
                drop(self._raised(message, error))
                continue
            if result.__class__ is not Message and not isinstance(result, Message):
                drop(self._not_a_message(message, result))
            elif result.status == "ok":
                keep(result)
            else:
                drop(result)
        if in_loop and monotonic() - started > HOLD_LIMIT:
            self.log.held("handle_message", started, "a chunk", len(messages))
        return ok, failed

    async def run_async(self, messages: list[Message]) -> tuple[list[Message], list[Message]]:
        """Handle ``messages``, awaiting the callbacks that are coroutine functions."""
        context = self.context
        if self.prepare_messages is not None:
            try:
                prepared = await maybe_await(self.prepare_messages(messages, context))
            except Exception as error:
                return self._prepare_raised(messages, error)
            refused = self._prepared(prepared, messages)
            if refused is not None:
                return refused
            messages = prepared
        handle = self.handle_message
        ok: list[Message] = []
        failed: list[Message] = []
        for message in messages:
            try:
                result = await maybe_await(handle("default", message, context))
            except Exception as error:
                failed.append(self._raised(message, error))
                continue
            if not isinstance(result, Message):
                failed.append(self._not_a_message(message, result))
            else:
                (ok if result.status == "ok" else failed).append(result)
        return ok, failed


@dataclass(frozen=True, slots=True)
class ProcessorGroup:
    """What the processors of one processor key share: their pipeline's ``name``, the
    ``producers`` they ask, their demand bounds, the ``handler`` of their callbacks (run in
    ``executor`` if one is given), the ``batchers`` they hand successful messages to (none:
    they acknowledge them) and the pipeline's ``outcomes``."""

    name: str
    producers: list[Producer]
    max_demand: int
    min_demand: int
    handler: MessageHandler
    executor: Executor | None
    batchers: dict[Any, Batcher]
    outcomes: Outcomes
    unbatched: UnbatchedWatch


class UnbatchedWatch:
    """Warns once when a pipeline without batchers is given a message put to a batcher:
    such messages are acknowledged after handle_message and handle_batch never runs."""

    __slots__ = ("name", "watching")

    def __init__(self, name: str, watching: bool) -> None:
        self.name = name
        self.watching = watching

    def look(self, messages: list[Message]) -> None:
        """The first and the last of each chunk are looked at (a handler that does it does
        it often)."""
        for message in (messages[0], messages[-1]) if messages else ():
            if message.batcher != "default":
                self.watching = False
                logger.warning(
                    "%s: a message was put to batcher %r, but the pipeline has no batchers: "
                    "such messages are acknowledged after handle_message and handle_batch "
                    "never runs; give the pipeline batchers={%r: {...}} (logged once)",
                    self.name, message.batcher, message.batcher)
                return


class Processor:
    """One processor (a ProcessorStage in Broadway).

    Its ``inbox`` holds the chunks producers delivered, ``outstanding`` what it still expects
    from each producer, ``current`` the chunk being handled. :meth:`run` is its task. It counts
    the messages it took (``received``), and of those handled, the ones it passed on or
    acknowledged (``successful``) and the ones that failed in it (``failed``): per chunk;
    and ``busy``, the seconds it spent handling chunks (two clock reads a chunk).
    """

    __slots__ = ("busy", "current", "failed", "group", "inbox", "index", "outstanding",
                 "partition", "received", "successful", "waiter")

    def __init__(self, group: ProcessorGroup, index: int, partition: int) -> None:
        self.group = group
        self.index = index
        self.partition = partition
        self.inbox: deque[tuple[Producer, list[Message]]] = deque()
        self.outstanding: dict[Producer, int] = {}
        self.waiter: asyncio.Future[None] | None = None
        self.current: list[Message] | None = None
        self.received = self.successful = self.failed = 0
        self.busy = 0.0

    def __repr__(self) -> str:
        return f"processor {self.index} of {self.group.name}"

    def deliver(self, producer: Producer, messages: list[Message]) -> None:
        """Take a chunk ``producer`` hands over (see :class:`~._producer.Consumer`)."""
        self.inbox.append((producer, messages))
        self.wake()

    def wake(self) -> None:
        """Stop waiting for a delivery: a producer started draining."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_everything(self) -> list[Message]:
        """Empty the processor (it crashed, or shutdown timed out): the producers forget
        what it asked; return its inbox and the chunk being handled."""
        taken: list[Message] = list(self.current) if self.current is not None else []
        for _, chunk in self.inbox:
            taken += chunk
        self.inbox.clear()
        self.current = self.waiter = None
        for producer in self.outstanding:
            producer._forget(self)
        self.outstanding.clear()
        return taken

    async def run(self) -> None:
        """Ask every producer for ``max_demand``, handle what arrives, ask again at
        ``min_demand``; return once every producer is drained for this processor."""
        group = self.group
        max_demand, min_demand = group.max_demand, group.min_demand
        producers = group.producers
        loop = asyncio.get_running_loop()
        for producer in producers:
            self.outstanding[producer] = max_demand
            producer._ask(self, max_demand)
        inbox = self.inbox
        since_yield = 0
        yielded_at = monotonic()
        while True:
            if not inbox:
                if all(producer._drained_for(self) for producer in producers):
                    return
                self.waiter = loop.create_future()
                await self.waiter
                self.waiter = None
                since_yield = 0
                yielded_at = monotonic()
                continue
            producer, messages = inbox.popleft()
            self.current = messages
            await self._handle_chunk(messages)
            left = self.outstanding[producer] - len(messages)
            if left <= min_demand:
                producer._ask(self, max_demand - left)
                left = max_demand
            self.outstanding[producer] = left
            since_yield += len(messages)
            now = monotonic()
            if since_yield >= _YIELD_EVERY or now - yielded_at >= _YIELD_AFTER:
                await asyncio.sleep(0)
                since_yield = 0
                yielded_at = monotonic()

    async def _handle_chunk(self, messages: list[Message]) -> None:
        group = self.group
        began = monotonic()
        self.received += len(messages)
        observed = telemetry.observed(_PROCESSOR_START, _PROCESSOR_STOP, _MESSAGE_EXCEPTION)
        if observed:
            started = time.monotonic_ns()
            meta = {"name": group.name, "processor_key": "default", "index": self.index,
                    "messages": messages}
            telemetry.emit(_PROCESSOR_START,
                           {"system_time": time.time_ns(), "monotonic_time": started}, meta)
        handler = group.handler
        if group.executor is not None:
            ok, failed = await asyncio.get_running_loop().run_in_executor(
                group.executor, handler.run, messages)
        elif handler.is_async:
            ok, failed = await handler.run_async(messages)
        else:
            ok, failed = handler.run(messages, True)
        if observed:
            for message in failed:
                status = message.status
                if status.__class__ is tuple and status[0] == "error":
                    telemetry.emit(_MESSAGE_EXCEPTION, {"monotonic_time": time.monotonic_ns()},
                                   {**meta, "message": message, "error": status[1]})
        outcomes = group.outcomes
        routed = _route(group.batchers, ok, failed) if group.batchers else None
        self.successful += len(messages) - len(failed)
        self.failed += len(failed)
        if failed:
            failed = await outcomes.handle_failed(failed)
        self.current = None
        if routed is None:
            if group.unbatched.watching:
                group.unbatched.look(ok)
            outcomes.ack(ok, failed)
        else:
            for batcher, batch in routed:
                # partition_by that raises fails its message (handle_failed has run by now)
                unplaced = batcher.add(batch)
                if unplaced:
                    self.successful -= len(unplaced)
                    self.failed += len(unplaced)
                    failed = [*failed, *unplaced]
            if failed:
                outcomes.ack([], failed)
        if observed:
            telemetry.emit_stop(_PROCESSOR_STOP, started, meta, ok, failed)
        self.busy += monotonic() - began  # waiting for a batcher's room is not work
        if routed is not None:
            for batcher, _ in routed:
                await batcher.wait_room()


def _route(batchers: dict[Any, Batcher], ok: list[Message], failed: list[Message]
           ) -> list[tuple[Batcher, list[Message]]]:
    """Group successful messages per batcher; those naming no known batcher join ``failed``."""
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
