"""What every node answers for the runtime: ``erpc`` spawn requests (so ``:rpc.call`` runs a
function the application exposed), ``net_kernel`` (so ``Node.ping`` gives ``:pong``), ``rex``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pybroadway._aio import maybe_await
from pybroadway._throttle import Throttle
from pybroadway.erldist import control as op
from pybroadway.erldist import flags as dflags
from pybroadway.erldist.genserver import From, GenServer
from pybroadway.term import Atom, Pid, Reference
from pybroadway.term.atoms import ERROR

if TYPE_CHECKING:
    from pybroadway.erldist.connection import Connection
    from pybroadway.erldist.connections import StartTask

_log = logging.getLogger("pybroadway.erldist.rpc")

ERPC = Atom("erpc")
EXECUTE_CALL = Atom("execute_call")
EXECUTE_CAST = Atom("execute_cast")
RETURN = Atom("return")
UNDEF = Atom("undef")
MONITOR = Atom("monitor")
LINK = Atom("link")
YES = Atom("yes")


class NetKernel(GenServer):
    """Answers ``{is_auth, Node}`` with ``yes``: that is all ``net_adm:ping`` asks."""

    def handle_call(self, request: Any, from_: From) -> Any:
        if type(request) is tuple and request and request[0] is Atom("is_auth"):
            return YES
        return (ERROR, Atom("not_supported"))


class Rex(GenServer):
    """The old rpc server: answers the nodeup ``features_request``; calls are refused."""

    def handle_call(self, request: Any, from_: From) -> Any:
        return (Atom("badrpc"), Atom("notsup"))

    def handle_info(self, message: Any) -> None:
        if (type(message) is tuple and len(message) == 2 and type(message[0]) is Pid
                and message[1] is Atom("features_request")):
            self.send(message[0], (Atom("features_reply"), self.node.name, [ERPC]))


class SpawnRequests:
    """Serves a node's SPAWN_REQUESTs: runs the ``functions`` the application exposed
    (:meth:`Node.expose <pybroadway.erldist.node.Node.expose>`), each under a pid from
    ``new_pid``, in a task from ``start_task``. Its log lines are throttled: any connected peer
    can call as often as it likes."""

    def __init__(self, functions: dict[tuple[Atom, Atom], Callable[..., Any]],
                 new_pid: Callable[[], Pid], start_task: StartTask) -> None:
        self._functions = functions
        self._new_pid = new_pid
        self._start_task = start_task
        self._undefined = Throttle(_log, logging.INFO, "rpc calls to undefined functions")
        self._raised = Throttle(_log, logging.WARNING, "rpc calls that raised")

    def serve(self, connection: Connection, control: tuple[Any, ...], args: Any) -> None:
        """Answer SPAWN_REQUEST ``{29, ReqId, From, GroupLeader, {M, F, Arity}, Opts}`` + Args.

        Only ``erpc:execute_call/4`` and ``execute_cast/3`` are served; anything else is
        refused with ``notsup``.
        """
        _, req_id, caller, _group_leader, mfa, options = control
        monitor = MONITOR in options if isinstance(options, list) else False
        link = LINK in options if isinstance(options, list) else False
        if mfa not in ((ERPC, EXECUTE_CALL, 4), (ERPC, EXECUTE_CAST, 3)):
            connection.send((op.SPAWN_REPLY, req_id, caller, 0, Atom("notsup")))
            return
        pid = self._new_pid()
        connection.send((op.SPAWN_REPLY, req_id, caller,
                         (1 if link else 0) | (2 if monitor else 0), pid))
        if mfa[1] is EXECUTE_CALL:
            result_ref, module, function, call_args = args
        else:
            result_ref, (module, function, call_args) = None, args
        self._start_task(self._execute(connection, pid, caller, req_id if monitor else None,
                                       result_ref, module, function, call_args),
                         name=f"rpc-{module}:{function}")

    async def _execute(self, connection: Connection, pid: Pid, caller: Pid,
                       monitor_ref: Reference | None, result_ref: Reference | None,
                       module: Atom, function: Atom, args: Any) -> None:
        func = self._functions.get((module, function))
        arity = len(args) if isinstance(args, list) else 0
        if func is None:
            result: Any = (result_ref, ERROR, UNDEF, [(module, function, args, [])])
            self._undefined.log("rpc to undefined %s:%s/%d", module, function, arity)
        else:
            try:
                value = await maybe_await(func(*args))
                result = (result_ref, RETURN, value)
            except Exception as exc:
                self._raised.log("rpc %s:%s/%d raised %r", module, function, arity, exc)
                result = (result_ref, ERROR,
                          (Atom("exception"), f"{type(exc).__name__}: {exc}"),
                          [(module, function, arity, [])])
        if monitor_ref is None or result_ref is None or connection.closed:
            return
        if connection.flags & dflags.EXIT_PAYLOAD:
            connection.send((op.PAYLOAD_MONITOR_P_EXIT, pid, caller, monitor_ref), result)
        else:
            connection.send((op.MONITOR_P_EXIT, pid, caller, monitor_ref, result))
