"""Telemetry events in the spirit of Erlang's ``:telemetry``.

Events are tuples of strings, e.g. ``("broadway", "processor", "stop")``. A handler is called
as ``handler(event, measurements, metadata)`` synchronously, in the event loop, where the event
happens; a handler that raises is logged and detached (as ``:telemetry`` does). When nobody
subscribed to an event, emitting it costs one dictionary lookup per chunk of messages.

Events emitted by pipelines (durations are in nanoseconds, times from ``time.monotonic_ns``):

``("broadway", "topology", "init")``
    measurements ``{"system_time"}``; metadata ``{"name", "config"}``.
``("broadway", "processor", "start")`` / ``("broadway", "processor", "stop")``
    for each chunk of messages a processor handles. start: measurements
    ``{"system_time", "monotonic_time"}``, metadata ``{"name", "processor_key", "index",
    "messages"}``; stop: measurements ``{"duration", "monotonic_time", "successful",
    "failed"}``, metadata adds ``"successful_messages_list"`` and ``"failed_messages_list"``.
``("broadway", "processor", "message", "exception")``
    for each message whose ``handle_message`` (or ``prepare_messages``) raised: measurements
    ``{"monotonic_time"}``, metadata ``{"name", "processor_key", "index", "message",
    "error"}``.
``("broadway", "batch_processor", "start")`` / ``stop`` / ``exception``
    for each batch: metadata ``{"name", "batcher", "index", "messages", "batch_info"}``; stop
    measurements add ``"successful"``/``"failed"`` counts and metadata the two lists;
    exception (``handle_batch`` raised) metadata adds ``"error"``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

__all__ = ["Event", "Handler", "emit", "subscribe"]

logger = logging.getLogger("pybroadway.pipeline")

#: A telemetry event's name, e.g. ``("pybroadway", "processor", "stop")``.
Event = tuple[str, ...]
#: A telemetry handler: ``handler(event, measurements, metadata)``.
Handler = Callable[[Event, dict[str, Any], dict[str, Any]], Any]

handlers: dict[Event, list[Handler]] = {}


def subscribe(events: Event | Iterable[Event], handler: Handler) -> Callable[[], None]:
    """Call ``handler`` for each of ``events`` (one event tuple or several).

    Returns a function that unsubscribes the handler from those events.
    """
    event_list: list[Event] = (
        [cast(Event, events)] if _is_event(events) else list(cast(Iterable[Event], events)))
    for event in event_list:
        handlers.setdefault(tuple(event), []).append(handler)

    def unsubscribe() -> None:
        for event in event_list:
            _detach(tuple(event), handler)

    return unsubscribe


def _is_event(events: Any) -> bool:
    return isinstance(events, tuple) and all(isinstance(part, str) for part in events)


def _detach(event: Event, handler: Handler) -> None:
    attached = handlers.get(event)
    if attached and handler in attached:
        attached.remove(handler)
        if not attached:
            del handlers[event]


def observed(*events: Event) -> bool:
    """Whether any of ``events`` has a handler (cheap when none has: one dict check)."""
    return bool(handlers) and any(event in handlers for event in events)


def emit(event: Event, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Call the handlers subscribed to ``event``."""
    for handler in list(handlers.get(event, ())):
        try:
            handler(event, measurements, metadata)
        except Exception:
            logger.exception("telemetry handler %r failed on %r; detaching it", handler, event)
            _detach(event, handler)


def emit_stop(event: Event, started: int, metadata: dict[str, Any],
              successful: list[Any], failed: list[Any]) -> None:
    """Emit the ``stop`` event of a processor's or a batch processor's unit of work that
    started at ``started`` (``time.monotonic_ns()``); used by the pipeline's stages."""
    now = time.monotonic_ns()
    emit(
        event,
        {"duration": now - started, "monotonic_time": now, "successful": len(successful),
         "failed": len(failed)},
        {**metadata, "successful_messages_list": successful, "failed_messages_list": failed})
