"""The gen_server protocol on the wire, from both sides.

A Python :class:`GenServer` answers ``GenServer.call`` and ``GenServer.cast`` from Elixir and
Erlang exactly as a BEAM gen_server does: ``{'$gen_call', {From, Tag}, Request}`` is answered
with ``{Tag, Reply}`` where ``Tag`` is echoed verbatim, sent to the alias inside the tag when
the caller's node negotiated ALIAS (``[alias | Ref]`` or ``[[alias | Ref] | _]``), otherwise to
the caller's pid. ``{'$gen_cast', Request}`` goes to :meth:`GenServer.handle_cast`, anything
else to :meth:`GenServer.handle_info`.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, NamedTuple

from pybroadway._throttle import Throttle
from pybroadway.erldist.process import Exit, Process, exception_reason
from pybroadway.term import Atom, ImproperList, Pid, Reference, loggable
from pybroadway.term.atoms import ALIAS, GEN_CALL, GEN_CAST, NORMAL

log = logging.getLogger("pybroadway.erldist.genserver")

NOREPLY: Any = object()
"""Return this from :meth:`GenServer.handle_call` to reply later with :meth:`GenServer.reply`."""


class From(NamedTuple):
    """Who called: the caller's pid and the tag its reply must carry."""

    pid: Pid
    tag: Any


def alias_of(tag: Any) -> Reference | None:
    """The alias a gen call's tag names (``[alias | A]`` or ``[[alias | A] | _]``), if any."""
    if type(tag) is ImproperList:
        head = tag.elements[0]
        if head is ALIAS and len(tag.elements) == 1 and type(tag.tail) is Reference:
            return tag.tail
        if type(head) is ImproperList and len(tag.elements) == 1:
            return alias_of(head)
    return None


def _awaiting(func: Any) -> bool:
    return inspect.iscoroutinefunction(func)


class GenServer(Process):
    """Subclass and override the callbacks you need; each may be a plain method or a
    coroutine. ``handle_call`` returns the reply (or :data:`NOREPLY`); raising :class:`Exit`
    (or any exception) in a callback stops the server, as a crash does on the BEAM.
    """

    _malformed_from: Throttle | None = None
    """Warnings of calls with a malformed From (a peer can send them at will), per server."""

    async def init(self) -> None:
        """Runs first, before any message is handled."""

    def handle_call(self, request: Any, from_: From) -> Any:
        """Answer a call. The default, like gen_server's, is to crash on unexpected calls."""
        raise Exit((Atom("bad_call"), request))

    def handle_cast(self, request: Any) -> Any:
        """Handle a cast. The default ignores it."""

    def handle_info(self, message: Any) -> Any:
        """Handle any other message. The default ignores it."""

    async def terminate(self, reason: Any) -> None:
        """Runs when the server stops because a callback raised or it returned."""

    def reply(self, from_: From, reply: Any) -> None:
        """Send ``reply`` to a caller (for replies deferred with :data:`NOREPLY`).

        A ``From`` whose first element is not a pid came from a malformed request: like
        ``gen:reply/2`` on the BEAM, the reply is dropped and the server goes on (with a
        warning, since a well-behaved caller never sends one).
        """
        if type(from_.pid) is not Pid:
            if self._malformed_from is None:
                self._malformed_from = Throttle(log, logging.WARNING,
                                                "calls with a malformed From")
            self._malformed_from.log("%r: no reply to a call with a malformed From %s", self,
                                     loggable(tuple(from_)))
            return
        self.node.gen_reply(self.pid, from_.pid, from_.tag, reply)

    async def run(self) -> Any:
        await self.init()
        cls = type(self)
        call_async = _awaiting(cls.handle_call)
        cast_async = _awaiting(cls.handle_cast)
        info_async = _awaiting(cls.handle_info)
        receive = self.receive
        reason: Any = NORMAL
        try:
            while True:
                message = await receive()
                if type(message) is tuple and len(message) >= 2:
                    kind = message[0]
                    if kind is GEN_CAST and len(message) == 2:
                        result = self.handle_cast(message[1])
                        if cast_async:
                            await result
                        continue
                    if kind is GEN_CALL and len(message) == 3 and type(message[1]) is tuple \
                            and len(message[1]) == 2:
                        from_ = From(*message[1])
                        reply = self.handle_call(message[2], from_)
                        if call_async:
                            reply = await reply
                        if reply is not NOREPLY:
                            self.reply(from_, reply)
                        continue
                result = self.handle_info(message)
                if info_async:
                    await result
        except Exception as exc:
            reason = exception_reason(exc)
            raise
        finally:
            await self.terminate(reason)
