"""Supervisors: processes that start children, watch them, and restart them when they die.

The model is OTP's ``supervisor``: children are started in order from :class:`ChildSpec`s and
linked to the supervisor, which traps exits. When a child ends, its ``restart`` type decides
whether it comes back (``permanent``: always; ``transient``: unless it ended ``normal`` or
``shutdown``; ``temporary``: never), and the strategy decides which children restart with it
(``one_for_one``: only it; ``one_for_all``: all; ``rest_for_one``: it and those started after
it). More than ``intensity`` restarts within ``period`` seconds means the fault is not
transient: the supervisor stops its children and exits with ``shutdown`` — its own supervisor,
or the node, then decides what happens.

A child comes back with its registrations: the local ``name`` of its spec is registered again
when it is restarted, and ``on_start`` runs for every start (restarts included), for what else a
child must re-establish, such as a ``:global`` name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pybroadway._aio import maybe_await
from pybroadway._restarts import RestartIntensity
from pybroadway.erldist.process import Exit, Process
from pybroadway.errors import ArgumentError, NotFound, StateError
from pybroadway.term import Atom, Pid, inspect
from pybroadway.term.atoms import EXIT, KILL, NORMAL, SHUTDOWN

__all__ = ["ChildSpec", "Restart", "Strategy", "Supervisor"]

log = logging.getLogger("pybroadway.erldist.supervisor")

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]

@dataclass(frozen=True)
class ChildSpec:
    """How to start one child and when to restart it.

    ``start`` makes a new, unstarted :class:`Process` each time it is called. ``name`` is
    registered locally for every incarnation. ``on_start(process)`` (plain or coroutine) runs
    after each start; if it raises, the start failed and counts as a crash. ``shutdown`` is how
    many seconds the child gets to end after an exit signal ``shutdown`` before it is killed.
    """

    id: str
    start: Callable[[], Process]
    name: str | Atom | None = None
    restart: Restart = "permanent"
    shutdown: float = 5.0
    on_start: Callable[[Process], Awaitable[None] | None] | None = None


class _Child:
    """A spec and its current incarnation (None while it is not running)."""

    __slots__ = ("process", "spec")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.process: Process | None = None


class _Request:
    """A request put in the supervisor's mailbox, handled in mailbox order (after the exit
    signals that came before it), as OTP's supervisor calls are."""

    __slots__ = ("answer", "argument", "kind")

    def __init__(self, kind: str, argument: Any, answer: asyncio.Future[Any]) -> None:
        self.kind = kind
        self.argument = argument
        self.answer = answer


class Supervisor(Process):
    """Starts ``children`` in order, restarts them by ``strategy`` within ``intensity``
    restarts per ``period`` seconds, and stops them in reverse order when it ends."""

    def __init__(self, children: Sequence[ChildSpec], *, strategy: Strategy = "one_for_one",
                 intensity: int = 3, period: float = 5.0) -> None:
        super().__init__()
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise ArgumentError(f"child ids must be unique, got {ids}")
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self._children = [_Child(spec) for spec in children]
        self._restarts = RestartIntensity(intensity, period)
        self.started = asyncio.Event()

    async def which_children(self) -> list[tuple[str, Pid | None]]:
        """Each child's id and the pid of its current incarnation (None when not running).

        Like OTP's ``which_children`` it is answered by the supervisor in turn, after every
        exit signal that reached it before the question, so it reflects their restarts.
        """
        answer: list[tuple[str, Pid | None]] = await self._ask("which_children", None)
        return answer

    async def start_child(self, spec: ChildSpec) -> Process:
        """Add ``spec`` as the last child and start it; returns the started process. Raises
        ValueError if a child has that id already, or what its start raised."""
        process: Process = await self._ask("start_child", spec)
        return process

    async def terminate_child(self, child_id: str) -> None:
        """Stop the child ``child_id`` (as the supervisor stops children) and forget its spec.
        Raises :class:`~pybroadway.errors.NotFound` (a KeyError) if there is no such child."""
        await self._ask("terminate_child", child_id)

    async def _ask(self, kind: str, argument: Any) -> Any:
        if not self.alive:
            raise StateError(f"supervisor {self.pid} is not running")
        request = _Request(kind, argument, asyncio.get_running_loop().create_future())
        self.deliver(request)
        return await request.answer

    def child(self, child_id: str) -> Process | None:
        """The current incarnation of the child ``child_id``."""
        for child in self._children:
            if child.spec.id == child_id:
                return child.process
        raise NotFound(f"supervisor {self.pid} has no child {child_id!r}")

    async def run(self) -> None:
        self.trap_exit = True
        try:
            for child in self._children:
                await self._start_child(child)
            self.started.set()
            while True:
                message = await self.receive()
                if type(message) is tuple and len(message) == 3 and message[0] is EXIT:
                    await self._on_exit(message[1], message[2])
                elif type(message) is _Request:
                    await self._serve(message)
        finally:
            await self._stop_children(self._children)

    async def _serve(self, request: _Request) -> None:
        try:
            if request.kind == "which_children":
                result: Any = [(child.spec.id, child.process.pid if child.process else None)
                               for child in self._children]
            elif request.kind == "start_child":
                result = await self._add_child(request.argument)
            else:
                await self._remove_child(request.argument)
                result = None
        except Exception as exc:
            if not request.answer.done():
                request.answer.set_exception(exc)
        else:
            if not request.answer.done():
                request.answer.set_result(result)

    async def _add_child(self, spec: ChildSpec) -> Process:
        if any(child.spec.id == spec.id for child in self._children):
            raise ArgumentError(f"supervisor {self.pid} has a child {spec.id!r} already")
        child = _Child(spec)
        process = await self._start_once(child)
        self._children.append(child)
        return process

    async def _remove_child(self, child_id: str) -> None:
        for index, child in enumerate(self._children):
            if child.spec.id == child_id:
                await self._stop_children([child])
                del self._children[index]
                return
        raise NotFound(f"supervisor {self.pid} has no child {child_id!r}")

    async def _on_exit(self, pid: Pid, reason: Any) -> None:
        index = next((i for i, child in enumerate(self._children)
                      if child.process is not None and child.process.pid == pid), None)
        if index is None:
            # Not a child: a linked parent (or anyone linked) ending abnormally ends us, as
            # on the BEAM; a normal exit of a non-child means nothing.
            if reason is not NORMAL:
                raise Exit(reason)
            return
        child = self._children[index]
        child.process = None
        if not self._should_restart(child.spec, reason):
            log.info("supervisor %s: child %s ended (%s), not restarted", self.pid,
                     child.spec.id, inspect(reason))
            return
        log.warning("supervisor %s: child %s ended (%s); restarting", self.pid, child.spec.id,
                    inspect(reason))
        self._count_restart()
        if self.strategy == "one_for_one":
            affected = [child]
        elif self.strategy == "one_for_all":
            affected = list(self._children)
        else:
            affected = self._children[index:]
        await self._stop_children(affected)
        for other in affected:
            await self._start_child(other)

    @staticmethod
    def _should_restart(spec: ChildSpec, reason: Any) -> bool:
        if spec.restart == "permanent":
            return True
        if spec.restart == "temporary":
            return False
        return reason is not NORMAL and reason is not SHUTDOWN and not (
            type(reason) is tuple and len(reason) == 2 and reason[0] is SHUTDOWN)

    def _count_restart(self) -> None:
        if not self._restarts.allow():
            log.error("supervisor %s: more than %d restarts in %ss; giving up", self.pid,
                      self.intensity, self.period)
            raise Exit(SHUTDOWN)

    async def _start_child(self, child: _Child) -> None:
        """Start one child; a start that fails counts as a crash, and is retried within the
        restart intensity."""
        while True:
            try:
                await self._start_once(child)
                return
            except Exception:
                self._count_restart()

    async def _start_once(self, child: _Child) -> Process:
        """One attempt to start ``child``: spawned, linked, named, ``on_start`` run. On failure
        the new process is killed and the error raised."""
        spec = child.spec
        process = self.node.spawn(spec.start(), link=self.pid)
        child.process = process
        try:
            if spec.name is not None:
                self.node.register(spec.name, process)
            if spec.on_start is not None:
                await maybe_await(spec.on_start(process))
        except Exception as exc:
            log.error("supervisor %s: child %s failed to start: %s", self.pid, spec.id, exc)
            child.process = None
            self.unlink(process.pid)
            process.exit(KILL)
            await process.wait()
            self._flush_exit(process.pid)
            raise
        return process

    def _flush_exit(self, pid: Pid) -> None:
        """Drop an EXIT of a child we ended ourselves that was queued before we unlinked it
        (as OTP's supervisor does with ``unlink`` + ``receive {'EXIT', Pid, _} after 0``)."""
        for index, message in enumerate(self._mailbox):
            if type(message) is tuple and len(message) == 3 and message[0] is EXIT \
                    and message[1] == pid:
                self._take_at(index)
                return

    async def _stop_children(self, children: Sequence[_Child]) -> None:
        """Stop running children, last started first: ``shutdown``, then kill after the spec's
        grace time."""
        for child in reversed(children):
            process = child.process
            if process is None:
                continue
            child.process = None
            self.unlink(process.pid)
            self._flush_exit(process.pid)
            self.node.exit(process.pid, SHUTDOWN, sender=self.pid)
            try:
                await asyncio.wait_for(asyncio.shield(process.wait()), child.spec.shutdown)
            except TimeoutError:
                log.warning("supervisor %s: child %s did not stop within %ss; killed", self.pid,
                            child.spec.id, child.spec.shutdown)
                process.exit(KILL)
                await process.wait()
