"""A :meth:`Node.call` waiting for its reply: what it waits on and how it fails."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pybroadway.errors import PyBroadwayError
from pybroadway.term import Atom, loggable


class CallError(PyBroadwayError, RuntimeError):
    """A :meth:`Node.call` failed: the target is gone, the node unreachable, or it timed out.

    ``reason`` is the Erlang-style reason (``noproc``, ``noconnection``, ``timeout``, or the
    target's exit reason).
    """

    def __init__(self, reason: Any, target: Any) -> None:
        super().__init__(f"call to {loggable(target)} failed: {loggable(reason)}")
        self.reason = reason
        self.target = target


@dataclass(slots=True)
class PendingCall:
    """One call in flight, kept by its monitor reference: the caller waits on ``future``;
    ``node`` is where the target lives, so losing that node fails the call."""

    future: asyncio.Future[Any]
    node: Atom

    def fail(self, reason: Any, target: Any) -> None:
        """End the call with :class:`CallError` (unless it has already ended)."""
        if not self.future.done():
            self.future.set_exception(CallError(reason, target))
