"""Python producers for BEAM consumers: a registered :class:`ProducerStage`, supervised, that a
pipeline (or any Python code) emits to."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pybroadway.erldist import Node, Process
from pybroadway.erldist.stages import Dispatcher, ProducerStage, StageStopped
from pybroadway.erldist.stages.producer import (
    DEFAULT_MAX_SUBSCRIPTIONS,
    DEFAULT_MAX_SUBSCRIPTIONS_PER_NODE,
    BufferKeep,
)
from pybroadway.erldist.supervisor import ChildSpec
from pybroadway.errors import StateError
from pybroadway.pipeline import Message


class Emitter(Protocol):
    """What :func:`forward` emits to: an :class:`ExposedStage` or a :class:`ProducerStage`."""

    async def emit(self, events: Iterable[Any]) -> None: ...


class ExposedStage:
    """A :class:`ProducerStage` registered under its name and supervised by the node's
    ``kernel_sup``: if it crashes it is started again under the same name. Its consumers see it
    go ``:DOWN`` and, as GenStage consumers do, subscribe again or end by their cancel mode.

    :meth:`emit` and :meth:`emit_nowait` go to the stage running now. What a crashed stage
    held in its buffer is lost with it, as in GenStage; what :meth:`emit` had not yet handed
    over goes to the next one, while :meth:`emit_nowait` raises :class:`StageStopped` between
    a crash and the restart (its ``unsent``: the events, for the caller to keep or drop).
    """

    def __init__(self, node: Node, name: str) -> None:
        self.node = node
        self.name = name
        self.child_id = f"gen_stage {name}"
        self._current: ProducerStage | None = None
        self._changed = asyncio.Event()
        self._stopped = False

    @property
    def stage(self) -> ProducerStage:
        """The stage running now; raises :class:`StageStopped` once :meth:`stop` was called
        or the node stopped."""
        stage, supervisor = self._current, self.node.supervisor
        if stage is None or self._stopped or supervisor is None or not supervisor.alive:
            raise StageStopped(f"the exposed stage {self.name} has stopped")
        return stage

    def _started(self, stage: Process) -> None:
        assert isinstance(stage, ProducerStage)
        self._current = stage
        self._changed.set()

    async def emit(self, events: Iterable[Any]) -> None:
        """Add events in order, waiting while the stage's buffer is full (see
        :meth:`ProducerStage.emit`); across a restart of the stage, to the new one."""
        batch = events if type(events) is list else list(events)
        while True:
            stage = self.stage
            try:
                await stage.emit(batch)
                return
            except StageStopped as stopped:
                batch = stopped.unsent
                await self._next_after(stage)

    def emit_nowait(self, events: Iterable[Any]) -> int:
        """:meth:`ProducerStage.emit_nowait` on the stage running now."""
        return self.stage.emit_nowait(events)

    async def _next_after(self, dead: ProducerStage) -> None:
        while self._current is dead:
            self._changed.clear()
            restarted = asyncio.ensure_future(self._changed.wait())
            down = asyncio.ensure_future(self.node.wait_down())
            try:
                await asyncio.wait((restarted, down), return_when=asyncio.FIRST_COMPLETED)
            finally:
                restarted.cancel()
                down.cancel()
            if down.done():
                raise StageStopped(f"the exposed stage {self.name} has stopped with its node")
        self.stage  # noqa: B018 - raises if it was stopped meanwhile

    async def stop(self) -> None:
        """Stop the stage and unregister its name (its consumers see it go ``:DOWN``)."""
        self._stopped = True
        self._changed.set()
        supervisor = self.node.supervisor
        if supervisor is not None and supervisor.alive:
            await supervisor.terminate_child(self.child_id)

    def __getattr__(self, name: str) -> Any:
        # Counters and the like (subscribers, buffered, dispatched, ...) of the stage now.
        return getattr(self.stage, name)


async def expose(node: Node, name: str, *,
                 dispatcher: Callable[[], Dispatcher] | None = None,
                 buffer_size: int | None = 10_000, buffer_keep: BufferKeep = "last",
                 max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
                 max_subscriptions_per_node: int = DEFAULT_MAX_SUBSCRIPTIONS_PER_NODE
                 ) -> ExposedStage:
    """Start a GenStage producer registered as ``name`` on ``node``, under the node's
    supervisor: Elixir consumers subscribe to ``{:name, :"py@host"}``
    (``GenStage.sync_subscribe(c, to: {...})`` or ``subscribe_to: [{{...}, max_demand: 100}]``).
    Feed it with ``await stage.emit(events)``, which waits while ``buffer_size`` events wait
    for the consumers' demand. ``dispatcher`` makes each incarnation's dispatcher (e.g.
    ``BroadcastDispatcher`` or ``lambda: PartitionDispatcher(4)``); by default, demand.
    ``max_subscriptions`` and ``max_subscriptions_per_node`` bound the subscriptions held, in
    all and of one node's consumers."""
    supervisor = node.supervisor
    if supervisor is None:
        raise StateError(f"node {node.name.name} is not started")
    exposed = ExposedStage(node, name)

    def start() -> ProducerStage:
        return ProducerStage(dispatcher=dispatcher() if dispatcher is not None else None,
                             buffer_size=buffer_size, buffer_keep=buffer_keep,
                             max_subscriptions=max_subscriptions,
                             max_subscriptions_per_node=max_subscriptions_per_node)

    await supervisor.start_child(ChildSpec(id=exposed.child_id, start=start, name=name,
                                           on_start=exposed._started))
    return exposed


async def forward(stage: Emitter, messages: Iterable[Message]) -> list[Message]:
    """Emit the data of ``messages`` to ``stage`` (waiting for room) and return the messages:
    the last line of a ``handle_batch`` that hands a pipeline's results to BEAM consumers."""
    batch = messages if isinstance(messages, list) else list(messages)
    await stage.emit([message.data for message in batch])
    return batch


def emitted(stage: ExposedStage | ProducerStage) -> dict[str, Any]:
    """The stage's counters: emitted, dispatched, dropped, buffered, asked, subscriptions."""
    current = stage.stage if isinstance(stage, ExposedStage) else stage
    return {"emitted": current.emitted, "dispatched": current.dispatched,
            "dropped": current.dropped, "buffered": current.buffered, "asked": current.asked,
            "subscriptions": len(current.subscribers)}
