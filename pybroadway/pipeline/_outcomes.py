"""Where messages leave a pipeline: acknowledged, counted, ``handle_failed`` run first.

Every stage is given the one :class:`Outcomes` of its pipeline (never the topology): the
processors and batch processors acknowledge through it, producers fail through it what no
processor took, the supervisor fails through it what a crashed stage held.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pybroadway._aio import maybe_await

from ._callback_log import CallbackLog
from ._message import Message, ack_messages, fail_all


class Outcomes:
    """The acknowledger side of one pipeline and its counters: ``handled`` and ``failed``
    (acknowledged so), ``untaken`` (of those failed, the ones no processor took); and the
    ``callback_log`` every stage logs its callbacks' failures to."""

    __slots__ = ("_handle_failed", "callback_log", "context", "failed", "handled", "name",
                 "untaken")

    def __init__(self, name: str, context: Any,
                 handle_failed: Callable[..., Any] | None) -> None:
        self.name = name
        self.context = context
        self._handle_failed = handle_failed
        self.callback_log = CallbackLog(name)
        self.handled = self.failed = self.untaken = 0

    def follow(self, context: Any, handle_failed: Callable[..., Any] | None) -> None:
        """A reload that keeps the stages: the new version's ``context`` and
        ``handle_failed`` from now on."""
        self.context = context
        self._handle_failed = handle_failed

    def ack(self, successful: list[Message], failed: list[Message]) -> None:
        """Acknowledge messages that left the pipeline, and count them."""
        self.handled += len(successful)
        self.failed += len(failed)
        ack_messages(successful, failed, self.callback_log)

    def fail_untaken(self, messages: list[Message], reason: Any) -> None:
        """Acknowledge as failed messages a producer got but no processor took.

        With a ``reason`` their status becomes ``("failed", reason)``; without, it is kept.
        """
        self.untaken += len(messages)
        self.ack([], messages if reason is None else fail_all(messages, ("failed", reason)))

    async def handle_failed(self, failed: list[Message]) -> list[Message]:
        """Run the pipeline's ``handle_failed`` (if any) on ``failed``; return what to ack."""
        callback = self._handle_failed
        if callback is None:
            return failed
        log = self.callback_log
        try:
            started = time.monotonic()
            returned = callback(failed, self.context)
            log.held("handle_failed", started, "a list", len(failed))
            result = await maybe_await(returned)
        except Exception as error:
            log.raised("handle_failed", error, f"on {len(failed)} messages")
            return failed
        if not isinstance(result, list) or len(result) != len(failed):
            log.returned("handle_failed", result,
                         f"the list of messages it was given ({len(failed)})")
            return failed
        return result
