"""A node's calls into gen_servers: each one in flight, what it waits on and how it fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pybroadway.erldist import control as op
from pybroadway.erldist.targets import node_of, target_name
from pybroadway.errors import PyBroadwayError, StateError
from pybroadway.term import Atom, Pid, Reference, loggable
from pybroadway.term.atoms import GEN_CALL, GEN_CAST, NOPROC, TIMEOUT

if TYPE_CHECKING:
    from pybroadway.erldist.process import Process

log = logging.getLogger("pybroadway.erldist.node")


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


class Calls:
    """The calls a node makes into gen_servers (:meth:`Node.call`, :meth:`Node.cast`), from
    one caller pid of its own, each kept in ``pending`` by its monitor reference until the
    reply, the target's ``DOWN`` or the timeout ends it."""

    def __init__(self, name: Atom, pending: dict[Reference, PendingCall], *,
                 make_ref: Callable[[], Reference], send: Callable[..., None],
                 route: Callable[..., None], local: Callable[[Any], Process | None]) -> None:
        self._name = name
        self.pending = pending
        self._make_ref = make_ref
        self._send = send
        self._route = route
        self._local = local
        self.caller: Pid | None = None
        """The pid calls come from and replies go to (once the node has started)."""

    async def call(self, target: Any, request: Any, timeout: float | None) -> Any:
        caller = self.caller
        if caller is None:
            raise StateError("start the node before calling")
        node = node_of(target, self._name)
        local: Process | None = None
        if node is self._name:
            local = self._local(target)
            if local is None:
                raise CallError(NOPROC, target)
        ref = self._make_ref()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[ref] = PendingCall(future, node)
        if local is None:
            self._route(node, (op.MONITOR_P, caller, target_name(target), ref))
        else:
            local.watchers[ref] = (caller, target)  # its exit fails the call (send_down)
        self._send(target, (GEN_CALL, (caller, ref), request), sender=caller)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise CallError(TIMEOUT, target) from None
        finally:
            if self.pending.pop(ref, None) is not None:
                if local is None:
                    self._route(node, (op.DEMONITOR_P, caller, target_name(target), ref))
                else:
                    local.watchers.pop(ref, None)

    def cast(self, target: Any, request: Any) -> None:
        self._send(target, (GEN_CAST, request), sender=self.caller)

    def reply(self, message: Any) -> None:
        """A message to the caller pid: the reply ``{ref, value}`` of a call in flight."""
        if type(message) is tuple and len(message) == 2:
            call = self.pending.get(message[0])
            if call is not None and not call.future.done():
                call.future.set_result(message[1])
                return
        log.debug("late or unexpected reply dropped: %s", loggable(message))
