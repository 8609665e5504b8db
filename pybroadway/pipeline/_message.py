"""Messages, batch information and acknowledgement (Broadway.Message, Broadway.Acknowledger)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pybroadway.errors import ArgumentError, CallbackError

from ._callback_log import CallbackLog

#: How a batch was made: ``"bulk"`` (full, or timed out) or ``"flush"`` (at a stop).
BatchMode = Literal["bulk", "flush"]
Status = Any  # "ok" | ("failed", reason) | ("error", exception)


@runtime_checkable
class Acknowledger(Protocol):
    """What a message's acknowledger must do (Broadway.Acknowledger).

    ``ack`` is called once per group of messages that share the same acknowledger and ack_ref,
    after those messages left the pipeline: ``successful`` were processed (and batched, if
    batchers are configured), ``failed`` carry a non-"ok" ``status``. It may return an
    awaitable, which the pipeline then runs as a task. Optionally an acknowledger implements
    ``configure(ack_ref, ack_data, options) -> new_ack_data`` for :meth:`Message.configure_ack`.
    """

    def ack(self, ack_ref: Any, successful: list[Message], failed: list[Message]) -> Any: ...


class NoopAcknowledger:
    """The acknowledger that does nothing; the default of every :class:`Message`."""

    @staticmethod
    def ack(ack_ref: Any, successful: list[Message], failed: list[Message]) -> None:
        """Do nothing."""

    @staticmethod
    def configure(ack_ref: Any, ack_data: Any, options: dict[str, Any]) -> Any:
        """Accept any option; the ack data stays as it is."""
        return ack_data


#: The acknowledger of messages nobody acknowledges (Broadway's ``NoopAcknowledger``).
NOOP_ACKNOWLEDGER: tuple[Any, Any, Any] = (NoopAcknowledger, None, None)


def _show_acknowledger(acknowledger: tuple[Any, Any, Any]) -> str:
    ack = acknowledger[0]
    head = ack.__qualname__ if isinstance(ack, type) else repr(ack)
    return f"({head}, {acknowledger[1]!r}, {acknowledger[2]!r})"


class Message:
    """One unit of work flowing through a pipeline (Broadway.Message).

    ``acknowledger`` is a tuple ``(acknowledger, ack_ref, ack_data)`` as in Broadway; the
    default is ``(NoopAcknowledger, None, None)``. ``status`` is ``"ok"``,
    ``("failed", reason)`` (set by :meth:`failed`) or ``("error", exception)`` (set by the
    pipeline when a callback raised). The ``put_*``/``update_*`` operations change the
    message in place and return it, so they chain.

    Its fields are its ``__slots__``, each set by ``__init__`` and none inherited: code that
    builds many messages may make one without ``__init__`` (``Message.__new__(Message)``) and
    set every field through its slot descriptor (as a compiled builder of messages may, to
    the values of a template message but its ``data``, ``acknowledger`` and ``_metadata``,
    which holds the metadata as given: a mapping, or None for none). A new field must be
    such a slot too.
    """

    __slots__ = (
        "_metadata", "acknowledger", "batch_key", "batch_mode", "batcher", "data", "status",
    )

    def __init__(
        self,
        data: Any,
        metadata: Mapping[str, Any] | None = None,
        acknowledger: tuple[Any, Any, Any] = NOOP_ACKNOWLEDGER,
        *,
        batcher: Any = "default",
        batch_key: Any = "default",
        batch_mode: BatchMode = "bulk",
        status: Status = "ok",
    ) -> None:
        self.data = data
        self._metadata = metadata
        self.acknowledger = acknowledger
        self.batcher = batcher
        self.batch_key = batch_key
        self.batch_mode = batch_mode
        self.status = status

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Metadata about the message (created empty on first use)."""
        if self._metadata is None:
            self._metadata = {}
        return self._metadata

    @metadata.setter
    def metadata(self, value: Mapping[str, Any]) -> None:
        self._metadata = value

    @property
    def raw_metadata(self) -> Mapping[str, Any] | None:
        """The metadata as given or set, or None if there is none: unlike :attr:`metadata`,
        reading it creates no empty dict (None stays None until :attr:`metadata` is read)."""
        return self._metadata

    def __repr__(self) -> str:
        metadata = {} if self._metadata is None else self._metadata  # shown, not created
        return (
            f"Message(data={self.data!r}, metadata={metadata!r}, "
            f"acknowledger={_show_acknowledger(self.acknowledger)}, batcher={self.batcher!r}, "
            f"batch_key={self.batch_key!r}, batch_mode={self.batch_mode!r}, "
            f"status={self.status!r})"
        )

    def update_data(self, fun: Callable[[Any], Any]) -> Message:
        """Replace ``data`` with ``fun(data)``."""
        self.data = fun(self.data)
        return self

    def put_data(self, data: Any) -> Message:
        """Replace ``data``."""
        self.data = data
        return self

    def put_batcher(self, batcher: Any) -> Message:
        """Send the message to the batcher named ``batcher``."""
        self.batcher = batcher
        return self

    def put_batch_key(self, batch_key: Any) -> Message:
        """Batch the message only with messages of the same ``batch_key``."""
        self.batch_key = batch_key
        return self

    def put_batch_mode(self, batch_mode: BatchMode) -> Message:
        """``"bulk"`` (the default) or ``"flush"``: flush the batch right after this message."""
        if batch_mode not in ("bulk", "flush"):
            raise ArgumentError(f"batch_mode must be 'bulk' or 'flush', got: {batch_mode!r}")
        self.batch_mode = batch_mode
        return self

    def failed(self, reason: Any) -> Message:
        """Mark the message failed: it is acknowledged as failed and ``handle_failed`` sees it."""
        self.status = ("failed", reason)
        return self

    def ack_immediately(self) -> Message:
        """Acknowledge now (as successful, or failed if already failed).

        The message keeps flowing through the pipeline with a no-op acknowledger, so it is
        never acknowledged twice.
        """
        if self.status == "ok":
            ack_messages([self], [])
        else:
            ack_messages([], [self])
        self.acknowledger = NOOP_ACKNOWLEDGER
        return self

    def configure_ack(self, **options: Any) -> Message:
        """Ask the acknowledger to change how this message will be acknowledged.

        Calls ``acknowledger.configure(ack_ref, ack_data, options)`` which returns the new
        ack_data; raises ``TypeError`` if the acknowledger has no ``configure``.
        """
        ack, ack_ref, ack_data = self.acknowledger
        configure = getattr(ack, "configure", None)
        if configure is None:
            raise CallbackError(f"the acknowledger {ack!r} does not implement configure/3")
        self.acknowledger = (ack, ack_ref, configure(ack_ref, ack_data, options))
        return self


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """Describes a batch handed to ``handle_batch`` (Broadway.BatchInfo).

    ``trigger`` says why the batch was emitted: ``"size"``, ``"timeout"`` or ``"flush"``
    (a message in ``"flush"`` batch mode, or the pipeline draining).
    """

    batcher: Any
    batch_key: Any
    partition: int | None
    size: int
    trigger: Literal["size", "timeout", "flush"]


def fail_all(messages: list[Message], status: Any) -> list[Message]:
    """Give every message of ``messages`` the ``status`` (a failure); return the list."""
    for message in messages:
        message.status = status
    return messages


_background: set[Any] = set()


_UNPIPED = CallbackLog("ack_messages")
"""Where the failures of acknowledgers called outside a pipeline's own acking are logged
(:meth:`Message.ack_immediately`, a direct :func:`ack_messages`)."""


def _log_ack_failure(log: CallbackLog, ack: Any, error: BaseException, ok: list[Message],
                     bad: list[Message]) -> None:
    # One kind per acknowledger (its class) and exception type: under load an acknowledger
    # whose broker is down raises on every batch.
    name = ack.__qualname__ if isinstance(ack, type) else type(ack).__qualname__
    log.raised(f"{name}.ack", error, f"on {len(ok)} successful and {len(bad)} failed messages",
               data=(ok or bad)[0].data)  # a group has at least one message


async def _await_ack(log: CallbackLog, ack: Any, pending: Any, ok: list[Message],
                     bad: list[Message]) -> None:
    try:
        await pending
    except Exception as error:
        _log_ack_failure(log, ack, error, ok, bad)


def ack_messages(successful: Iterable[Message], failed: Iterable[Message],
                 log: CallbackLog | None = None) -> None:
    """Acknowledge messages, calling each acknowledger once per ``(acknowledger, ack_ref)``.

    Order is kept within each group. An exception raised by an acknowledger is logged to
    ``log`` (a pipeline's, which throttles each kind of failure; by default one for acks made
    outside a pipeline) and does not stop the others; an awaitable returned by one is run as
    a task.
    """
    log = _UNPIPED if log is None else log
    groups: dict[Any, tuple[Any, Any, list[Message], list[Message]]] = {}
    for position, messages in enumerate((successful, failed)):
        last: Any = None
        last_ack: Any = None
        last_ref: Any = None
        group: Any = None
        for message in messages:
            acknowledger = message.acknowledger
            # Consecutive messages usually share the acknowledger tuple, or (each with its
            # own ack_data) its first two items: the group is looked up when they change.
            if acknowledger is not last:
                last = acknowledger
                ack, ack_ref = acknowledger[0], acknowledger[1]
                if ack is not last_ack or ack_ref is not last_ref or group is None:
                    last_ack, last_ref = ack, ack_ref
                    try:
                        key: Any = (ack, ack_ref)
                        group = groups.get(key)
                    except TypeError:  # an unhashable ack_ref: group by identity
                        key = (ack, id(ack_ref))
                        group = groups.get(key)
                    if group is None:
                        group = groups[key] = (ack, ack_ref, [], [])
            group[2 + position].append(message)
    for ack, ack_ref, ok, bad in groups.values():
        try:
            result = ack.ack(ack_ref, ok, bad)
        except Exception as error:
            _log_ack_failure(log, ack, error, ok, bad)
            continue
        if result is not None and inspect.isawaitable(result):
            task = asyncio.ensure_future(_await_ack(log, ack, result, ok, bad))
            _background.add(task)
            task.add_done_callback(_background.discard)
