"""The producer stage: a buffer, demand bookkeeping, dispatch to processors.

A producer meets the rest of the pipeline through two small interfaces declared here:
:class:`ProducerHost` (what it needs of the topology it is attached to) and
:class:`Consumer` (what it hands messages to: a processor). The topology drives it through
the protected methods listed in :class:`Producer`'s docstring.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import reprlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from pybroadway.errors import CallbackError, StateError

from ._demand import PullDemand
from ._message import Message
from ._partition import PartitionBuffer, partition

if TYPE_CHECKING:
    from ._callback_log import CallbackLog
    from ._rate_limiter import RateLimiter

logger = logging.getLogger("pybroadway.pipeline")

Mode = Literal["push", "pull"]


class Consumer(Protocol):
    """What a producer hands messages to (a processor)."""

    @property
    def partition(self) -> int:
        """The partition this consumer takes messages from (0 without ``partition_by``)."""

    def deliver(self, producer: Producer, messages: list[Message]) -> None:
        """Take ``messages``; never more than the consumer asked ``producer`` for."""

    def wake(self) -> None:
        """Look again at the producers: one started draining."""


class ProducerHost(Protocol):
    """What a producer needs of the topology it is attached to (the topology implements it)."""

    @property
    def partitions(self) -> int:
        """Number of processor partitions; the producer keeps one buffer per partition."""

    @property
    def partition_by(self) -> Callable[[Message], int] | None:
        """Chooses a message's partition when there are several."""

    @property
    def transformer(self) -> tuple[Callable[[Any, Any], Message], Any] | None:
        """``(function, options)`` turning each pushed event into a message, or None."""

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The limiter every producer takes from before delivering, or None."""

    @property
    def callback_log(self) -> CallbackLog:
        """Where ``handle_demand``'s failures are logged."""

    def fail_untaken(self, messages: list[Message], reason: Any) -> None:
        """Acknowledge as failed messages no processor took (``reason`` None: keep status)."""

    def crash(self, producer: Producer, error: BaseException) -> None:
        """``producer`` failed (its ``handle_demand`` raised, :mod:`._demand`): restart it
        as a crashed stage, within the pipeline's restart intensity."""


class Producer:
    """Base class of the pipeline's producers (a GenStage producer in Broadway).

    Processors ask producers for messages (demand); a producer hands them messages from its
    buffer, never more than they asked for. Messages enter the buffer in one of two modes,
    which a producer declares with :attr:`mode`:

    **Pull mode** (``mode = "pull"``) — override :meth:`handle_demand`. It is called with each
    *new* demand (the number of further messages the processors want); the producer owes the
    sum of the demands it was given (:attr:`pending_demand`). Deliver by returning messages (at
    most what is owed: more is reported as an error, logged and counted in
    ``stats()["demand_exceeded"]``, and still processed), or later, e.g. when answers arrive
    over the network, by calling :meth:`push_messages`. ``handle_demand`` may be a plain
    method or a coroutine (calls are then serialised: the next starts when the previous
    returned). One that raises crashes the producer, as it crashes a GenStage producer: it is
    logged, what the producer buffered fails, and the producer starts afresh and is asked
    again for what the processors wait for; past ``max_restarts`` the pipeline stops.

    **Push mode** (``mode = "push"``, the default) — call :meth:`push_messages` whenever data
    arrives; ``handle_demand`` is never called. The buffer is bounded by ``buffer_size``:
    push_messages never drops anything, but it returns ``False`` once the buffer holds
    ``buffer_size`` messages or more, and the producer calls :meth:`on_buffer_full`; when
    processors have taken enough that the buffer is down to ``resume_at`` messages, it calls
    :meth:`on_buffer_available` (and :meth:`wait_for_room` returns). A source that can pause (a
    socket) pauses in ``on_buffer_full`` and resumes in ``on_buffer_available``; a coroutine
    source just does ``if not producer.push_messages(batch): await producer.wait_for_room()``.

    ``mode`` is a class attribute, or an instance attribute set in ``__init__`` for a class
    that can run either way (a class that defines ``handle_demand`` must declare it).
    Subclasses that define ``__init__`` must pass ``buffer_size``/``resume_at`` on to
    ``super().__init__``. The pipeline builds ``concurrency`` instances from
    ``producer={"module": (Class, {kwargs})}`` and names them ``"<pipeline>.Producer_<i>"``.

    Lifecycle hooks (plain methods or coroutines): :meth:`on_start`,
    :meth:`prepare_for_draining`, :meth:`on_stop`. Once the pipeline drains, messages the
    producer is given are acknowledged as failed with reason ``"shutdown"``. A reload
    (:meth:`Pipeline.reload`) keeps the producers running: none of these is called.

    The topology drives a producer through its protected methods (``_attach``, ``_ask``,
    ``_hand_over``, ...); subclasses neither call nor override them.
    """

    mode: Mode = "push"
    buffer_size: int | None = 10_000
    resume_at: int | None = None
    name: str = ""
    notify_taken: bool = False
    """Set to True to have :meth:`on_taken` called each time processors take messages."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The mode is declared, never guessed; but a handle_demand with no mode declared
        # anywhere would never be called, so say so where the class is written.
        declared = any("mode" in klass.__dict__ for klass in cls.__mro__ if klass is not Producer)
        if "handle_demand" in cls.__dict__ and not declared:
            raise CallbackError(f"{cls.__qualname__} defines handle_demand but declares no mode: "
                                'add mode = "pull" to the class (push producers need no '
                                "handle_demand)")

    def __init__(self, *, buffer_size: int | None = 10_000, resume_at: int | None = None) -> None:
        """``buffer_size``: messages held before the buffer counts as full (``None``: never).
        ``resume_at``: buffered messages at which a full buffer has room again (default
        ``buffer_size // 2``)."""
        self.buffer_size = buffer_size
        self.resume_at = resume_at

    # -- the user's side -------------------------------------------------------------------

    def handle_demand(self, demand: int) -> Iterable[Any] | Any | None:
        """Called with new demand in pull mode; return messages (or None), or a coroutine."""
        return None

    def push_messages(self, messages: Iterable[Any]) -> bool:
        """Put messages (or events, if a transformer is set) into the buffer, in order.
        Returns ``True`` while the buffer has room, ``False`` once it is full. Raises
        ``RuntimeError`` if the pipeline was not started. Call it from the pipeline's event
        loop (it is not thread-safe; from a thread use ``loop.call_soon_threadsafe``)."""
        if getattr(self, "_host", None) is None:
            raise StateError(f"producer {self!r} is not part of a running pipeline")
        batch = list(messages)
        if self._owed:
            self._owed -= min(self._owed, len(batch))
        self._receive(batch)
        return not self._full

    async def wait_for_room(self) -> None:
        """Return once the buffer is not full (at once if it is not)."""
        if self._full:
            await self._room.wait()

    def on_buffer_full(self) -> None:
        """Called when the buffer reaches ``buffer_size``; override to pause your source."""

    def on_buffer_available(self) -> None:
        """Called when a full buffer is down to ``resume_at``; override to resume."""

    def on_taken(self, count: int) -> None:
        """Called after processors took ``count`` messages from the buffer, when the class
        sets ``notify_taken = True``: a producer that asks its source ahead of the demand (to
        keep the buffer topped up across a network round trip) asks again here. Called once
        per chunk taken, never per message; it must not block."""

    def on_start(self) -> Any:
        """Called when the pipeline starts, before any demand."""

    def prepare_for_draining(self) -> Any:
        """Called when the pipeline starts stopping; stop fetching new work here."""

    def on_stop(self) -> Any:
        """Called after the pipeline stopped."""

    @property
    def buffered(self) -> int:
        """Messages in the buffer."""
        return self._buffered

    @property
    def is_full(self) -> bool:
        """Whether the buffer is full (see ``buffer_size`` and ``resume_at``)."""
        return self._full

    @property
    def pending_demand(self) -> int:
        """Messages asked through ``handle_demand`` and not yet delivered."""
        return self._owed

    @property
    def received(self) -> int:
        """Messages that came into this producer (pushed, or returned by ``handle_demand``)."""
        return self._received

    @property
    def taken(self) -> int:
        """Messages processors took from this producer."""
        return self._taken

    @property
    def demand_exceeded(self) -> int:
        """Times ``handle_demand`` delivered more messages than were asked for."""
        return self._demand_exceeded

    # -- the topology's side ---------------------------------------------------------------

    def _attach(self, host: ProducerHost, name: str) -> None:
        """Join a pipeline as ``name``; reads ``mode`` and the ``host``'s settings."""
        self.name = name
        self._buffered = self._received = self._taken = self._demand_exceeded = 0
        self._owed = 0
        self._pulls = self.mode == "pull"
        # handle_demand looked up at each call, as a method call does: an instance may replace it
        self._demand = PullDemand(lambda demand: self.handle_demand(demand),
                                  inspect.iscoroutinefunction(self.handle_demand),
                                  self._take_pulled,
                                  lambda: self._host.callback_log,
                                  lambda error: self._host.crash(self, error),
                                  lambda: self._draining, name)
        self._notify_taken = self.notify_taken
        self._draining = self._full = False
        self._room = asyncio.Event()
        self._room.set()
        if self.buffer_size is not None and self.resume_at is None:
            self.resume_at = self.buffer_size // 2
        self._join(host, frozenset())

    def _join(self, host: ProducerHost, retired: frozenset[Consumer]) -> None:
        self._host = host
        self._parts = [PartitionBuffer() for _ in range(host.partitions)]
        self._partition_by = host.partition_by
        self._transformer = host.transformer
        self._rate_limiter = host.rate_limiter
        self._retired = retired

    def _receive(self, batch: list[Any]) -> None:
        if self._transformer is not None:
            transform, transform_options = self._transformer
            batch = [transform(event, transform_options) for event in batch]
        elif batch and not isinstance(batch[0], Message):
            # The usual slip: plain data where messages are wanted. Said here, to the caller,
            # rather than as a crash in a processor later (one look per batch, not per item).
            raise CallbackError(
                f"{self.name}: producers deliver Message objects, got "
                f"{type(batch[0]).__name__} {reprlib.repr(batch[0])}: wrap the data in "
                f"Message(data, acknowledger=...) or give the producer a transformer")
        self._route(batch)

    def _route(self, batch: list[Message]) -> None:
        self._received += len(batch)
        if self._draining:
            self._host.fail_untaken(batch, "shutdown")
            return
        parts = self._parts
        if len(parts) == 1:
            self._buffered += len(batch)
            parts[0].buffer.put(batch)
            self._serve(parts[0])
        else:
            routed, unroutable = partition(
                batch, cast(Callable[[Message], int], self._partition_by), len(parts))
            if unroutable:
                self._host.fail_untaken(unroutable, None)
            self._buffered += len(batch) - len(unroutable)
            for part, messages in zip(parts, routed, strict=True):
                if messages:
                    part.buffer.put(messages)
                    self._serve(part)
        if (
            self.buffer_size is not None
            and not self._full
            and self._buffered >= self.buffer_size
        ):
            self._full = True
            self._room.clear()
            self.on_buffer_full()

    def _ask(self, consumer: Consumer, demand: int) -> None:
        """``consumer`` wants ``demand`` more messages (none for one a reload retired)."""
        if consumer in self._retired:
            return
        part = self._parts[consumer.partition]
        if not part.waiters and part.buffer.size:
            demand -= self._give(consumer, part, demand)
            if not demand:
                return
        part.waiters.append([consumer, demand])
        if self._pulls and not self._draining:
            self._owed += demand
            self._demand.ask(demand)

    def _take_pulled(self, result: Iterable[Any] | None) -> None:
        if result is None:
            return
        log = self._host.callback_log
        batch = list(result) if isinstance(result, Iterable) else None
        if batch is None or (batch and self._transformer is None
                             and not isinstance(batch[0], Message)):
            log.returned("handle_demand", result, "an iterable of Message objects (of events, "
                         "with a transformer) or None")
            return
        if len(batch) > self._owed:
            logger.error(
                "%s: handle_demand delivered %d messages but only %d were asked for",
                self.name, len(batch), self._owed,
            )
            self._demand_exceeded += 1
            self._owed = 0
        else:
            self._owed -= len(batch)
        try:
            self._receive(batch)
        except Exception as error:  # the transformer's
            log.raised("transformer", error, "on what handle_demand returned", f" of {self.name}")

    def _give(self, consumer: Consumer, part: PartitionBuffer, demand: int) -> int:
        available = part.buffer.size
        count = demand if demand <= available else available
        limiter = self._rate_limiter
        if limiter is not None:
            count = limiter.take(count)
            if not count:
                return 0
        messages = part.buffer.take(count)
        self._buffered -= count
        self._taken += count
        consumer.deliver(self, messages)
        if self._notify_taken:
            self.on_taken(count)
        if self._full and self._buffered <= (self.resume_at or 0):
            self._full = False
            self._room.set()
            self.on_buffer_available()
        return count

    def _serve(self, part: PartitionBuffer) -> None:
        waiters = part.waiters
        while waiters and part.buffer.size:
            entry = waiters[0]
            given = self._give(entry[0], part, entry[1])
            if not given:
                return
            entry[1] -= given
            if not entry[1]:
                waiters.popleft()

    def _forget(self, consumer: Consumer) -> None:
        """``consumer`` is gone (it crashed): drop what it asked. What the source owes for it
        (pull mode) still comes, for the consumers that ask next."""
        part = self._parts[consumer.partition]
        part.waiters = deque(entry for entry in part.waiters if entry[0] is not consumer)

    def _serve_all(self) -> None:
        """Hand buffered messages to the consumers waiting (the rate limit was refilled)."""
        for part in self._parts:
            self._serve(part)

    def _drained_for(self, consumer: Consumer) -> bool:
        """Whether ``consumer`` gets nothing more: retired, or drained."""
        return consumer in self._retired or (
            self._draining and not self._parts[consumer.partition].buffer.size)

    def _hand_over(self, host: ProducerHost, retired: list[Consumer]) -> None:
        """A reload: join ``host`` (the new pipeline's) and wake ``retired`` (the old one's
        consumers), which get nothing more. The buffer stays in order, placed by the new
        ``partition_by``; what the retired were owed is owed to the new consumers' demand."""
        unmet = sum(entry[1] for part in self._parts for entry in part.waiters)
        self._owed -= min(self._owed, unmet)
        buffered = self._take_everything()  # each key lies in one partition, in order
        self._join(host, frozenset(retired))
        self._received -= len(buffered)  # counted once, when they came
        self._route(buffered)
        for consumer in retired:
            consumer.wake()

    def _start_draining(self) -> None:
        """Take no new work; wake the consumers waiting so they can see they are done."""
        self._draining = True
        self._room.set()
        for part in self._parts:
            for consumer, _ in part.waiters:
                consumer.wake()

    def _restart(self) -> list[Message]:
        """Start afresh after a crash: empty the buffer and return what it held; then, in
        pull mode, ask ``handle_demand`` again for what the consumers still wait for (what
        the crashed incarnation was asked is not owed any more)."""
        leftovers = self._take_everything()
        self._demand.restart()
        self._owed = 0
        if self._full:
            self._full = False
            self._room.set()
            self.on_buffer_available()
        waiting = [entry for part in self._parts for entry in part.waiters]
        if self._pulls and not self._draining:
            for part in self._parts:
                part.waiters.clear()
            for consumer, demand in waiting:
                self._ask(consumer, demand)
        return leftovers

    def _take_everything(self) -> list[Message]:
        """Empty the buffer (shutdown timed out) and return what it held."""
        leftovers = [message for part in self._parts
                     for message in part.buffer.take(part.buffer.size)]
        self._buffered = 0
        return leftovers
