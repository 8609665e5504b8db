"""The front: the transport from a pipeline's producers to its workers.

The pipeline's :class:`~pybroadway.pipeline.OffloadedProcessors` hand it ``(id, message)`` pairs; it
emits them as events to a GenStage producer stage the workers subscribe to, so GenStage's
demand decides who gets what (the worker with the most demand; a slow worker asks for less).
It remembers which worker holds which ids, turns the outcomes the workers report into
acknowledgements (a worker is known by the node of the connection its outcomes come on, never
by what they say; only the ids it holds count, each once), and when a worker's subscription
ends (the worker crashed, was killed, or its node went down) fails what it held, or emits it
again for another worker (``redeliver``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from pybroadway._throttle import Throttle
from pybroadway.erldist import Node, Process
from pybroadway.erldist.pg import Scope
from pybroadway.erldist.pg import api as pg
from pybroadway.erldist.stages import (
    DemandDispatcher,
    Dispatcher,
    PartitionDispatcher,
    ProducerStage,
)
from pybroadway.erldist.stages.dispatchers import Subscriber
from pybroadway.erldist.supervisor import ChildSpec
from pybroadway.errors import ArgumentError
from pybroadway.pipeline import Entry, OffloadedProcessors, OffloadSetup
from pybroadway.term import Atom, Pid, loggable
from pybroadway.term.atoms import DOWN, GEN_CALL

from ._options import OK, OPTIONS_REQUEST, front_topology
from ._ports import WorkerPorts
from ._protocol import (
    OUTCOMES,
    SAME,
    SCOPE,
    events,
    group,
    plain_metadata,
    stage_name,
    status_of,
)
from ._schema import completed, validate_options

log = logging.getLogger("pybroadway.workers")

RATE_WINDOW = 1.0
DEPARTED_LIMIT = 1000
"""Workers that left whose counters are kept (one that comes back under its node's name goes
on from them); the earliest to leave are forgotten first."""
RECEIVED = object()
"""Marks outcomes in the stage's mailbox as checked: ``(RECEIVED, node, message)`` (a peer
sends terms, never this object)."""
GONE = object()
"""``(GONE, node)``: the node of a worker stopped by a reload went down, in the stage's
mailbox behind the outcomes it sent before."""
ROLL_TIMEOUT = 60.0
"""Seconds a reload waits for a replaced worker to go, and for its successor to join."""
_first = itemgetter(0)


class Worker:
    """One worker as the front sees it: its subscription, the ids of what it holds, and its
    counters."""

    __slots__ = ("failed", "handled", "held", "marks", "node", "partition", "pid", "subscriber")

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.pid: Pid = subscriber.pid
        self.node: Atom = subscriber.pid.node
        self.partition: Any = subscriber.partition
        self.held: set[int] = set()
        self.handled = self.failed = 0
        start = (time.monotonic(), 0)
        self.marks = (start, start)

    def rate(self) -> float:
        done = self.handled + self.failed
        now = time.monotonic()
        older, newer = self.marks
        if now - newer[0] >= RATE_WINDOW:
            older, newer = self.marks = (newer, (now, done))
        return (done - older[1]) / (now - older[0]) if now > older[0] else 0.0


class FrontStage(ProducerStage):
    """The producer stage workers subscribe to; also where their outcomes arrive (one
    mailbox, so an outcome sent before a worker went down is seen before its DOWN).

    It reports to its ``front`` through the front's ``worker_*`` methods (a worker joined,
    was sent events, reported outcomes, left) and asks it for an event's ``metadata_of``,
    its ``name`` and the ``topology`` workers run."""

    def __init__(self, front: WorkerFront, dispatcher: Dispatcher) -> None:
        super().__init__(dispatcher=dispatcher, buffer_size=None, max_subscriptions_per_node=1)
        self.front = front
        self._unexpected = Throttle(log, logging.WARNING, "unexpected messages")

    def _send_events(self, subscriber: Subscriber, batch: list[Any]) -> None:
        if batch and batch[0][2] is SAME:
            # The dispatcher cut a run: this subscriber's batch must begin with a map.
            key, data, _ = batch[0]
            batch = [(key, data, self.front.metadata_of(key)), *batch[1:]]
        self.front.worker_sent(subscriber, batch)
        super()._send_events(subscriber, batch)

    def on_subscribe(self, subscriber: Subscriber) -> None:
        self.front.worker_joined(subscriber)

    def on_cancel(self, subscriber: Subscriber, reason: Any) -> None:
        self.front.worker_left(subscriber, reason)

    def deliver_from(self, sender: Pid | None, message: Any) -> None:
        # Outcomes count for the node of the connection they came on (the node passes a
        # sender only if it is a process of that node), never for the node they name. They
        # are queued with it, in their place among the stage's other messages.
        if type(message) is tuple and message and message[0] is OUTCOMES:
            message = (RECEIVED, None if sender is None else sender.node, message)
        super().deliver_from(sender, message)

    def handle_info(self, message: Any) -> None:
        if type(message) is tuple and len(message) == 3 and message[0] is RECEIVED:
            self.front.worker_outcomes(message[1], message[2])
        elif type(message) is tuple and len(message) == 2 and message[0] is GONE:
            self.front.worker_gone(message[1])
        elif (type(message) is tuple and len(message) == 3 and message[0] is GEN_CALL
              and type(message[1]) is tuple and len(message[1]) == 2):
            self._call(message[1][0], message[1][1], message[2])
        elif type(message) is tuple and message and message[0] is DOWN:
            log.debug("%r: a late DOWN: %s", self, loggable(message))  # of a subscription ended
        else:
            self._unexpected.log("%r: unexpected message ignored: %s", self, loggable(message))

    def _call(self, caller: Any, tag: Any, request: Any) -> None:
        """``{pybroadway_worker_options, Name}``: the topology a joining worker runs."""
        if type(caller) is not Pid:
            self._unexpected.log("%r: a call from %s ignored", self, loggable(caller))
            return
        if (type(request) is tuple and len(request) == 2 and request[0] is OPTIONS_REQUEST
                and request[1] == Atom(self.front.name)):
            reply: Any = (OK, self.front.topology)
        else:
            self._unexpected.log("%r: unexpected call %s", self, loggable(request))
            reply = (Atom("error"), (Atom("bad_call"), request))
        self.node.gen_reply(self.pid, caller, tag, reply)


class WorkerFront:
    """The :class:`~pybroadway.pipeline.Offload` of ``pybroadway.workers``: declared
    ``offload=(WorkerFront, {options})``, see :data:`~._schema.SCHEMA`."""

    validate_options = staticmethod(validate_options)

    def __init__(self, options: dict[str, Any], setup: OffloadSetup) -> None:
        options = completed(options, setup)
        options["concurrency"] = setup.concurrency
        self.options = options
        self.name = setup.name
        partitions = setup.partitions
        self.window: int = options["max_in_flight"]
        self.node: Node = options["node"]
        self.count: int = options["count"]
        self.redeliver: bool = options["redeliver"]
        self.partitioned = partitions > 1
        if self.partitioned and self.count < 1:
            raise ArgumentError("a partitioned pipeline needs offload=(WorkerFront, {'count': N}) "
                                "with N >= 1: "
                                "each partition belongs to one of them")
        # What the workers run (asked by each when it joins); ValueError if they cannot
        self.topology, self.notes = front_topology(dict(setup.options))
        self.workers: dict[Atom, Worker] = {}
        # counters of workers that left, the earliest first (at most DEPARTED_LIMIT)
        self.gone: dict[Atom, dict[str, Any]] = {}
        self._ignored = Throttle(log, logging.WARNING, "ignored outcomes")
        self.lost = self.redelivered = 0
        self._route = 0
        self.offloaded: OffloadedProcessors | None = None
        self.stage: FrontStage | None = None
        self.scope: Scope | None = None
        self.ports: WorkerPorts | None = None
        self.failure: asyncio.Future[str] | None = None
        # A reload's: the nodes of workers told to drain, those that left and may still
        # report, and what it waits for (a node gone, a node joined)
        self.draining: set[Atom] = set()
        self.leaving: dict[Atom, Worker] = {}
        self._awaited: dict[tuple[bool, Atom], asyncio.Future[None]] = {}
        self._unwatch: Callable[[], None] | None = None

    # -- the Offload interface ---------------------------------------------------------------

    async def start(self, offloaded: OffloadedProcessors) -> None:
        self.offloaded = offloaded
        self.failure = asyncio.get_running_loop().create_future()
        try:
            self.scope = await pg.start(self.node, SCOPE)
        except ValueError:  # the scope runs already
            self.scope = pg.scope(self.node, SCOPE)
        stage = ChildSpec(id="stage", start=self._new_stage, name=stage_name(self.name),
                          on_start=self._stage_started)
        self.ports = WorkerPorts(self.node, self.name, self.options, stage,
                                 partitioned=self.partitioned, gave_up=self.gave_up)
        await self.ports.start()
        self._unwatch = self.node.monitor_nodes(self._node_event)
        for note in self.notes:
            log.warning("%s: %s", self.name, note)
        log.info("%s: %d worker%s on %s (pg scope %s, group %s)", self.name, self.count,
                 "" if self.count == 1 else "s", self.node.name.name, SCOPE, self.name)

    def send(self, partition: int, entries: list[Entry]) -> None:
        if self.stage is None or not self.stage.alive:
            return  # in flight, not held by a worker: the restarted stage emits them
        self._route = partition % self.count if self.partitioned else 0
        self.stage.emit_nowait(events(entries))

    async def stop(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
        if self.ports is not None:
            await self.ports.stop()
        if self.failure is not None and not self.failure.done():
            self.failure.cancel()

    async def roll(self, options: Mapping[str, Any]) -> None:
        """A reload: workers that join from now on run the pipeline of ``options``; those
        this front started are replaced one at a time, each draining first (what it took
        is handled and reported before it goes, none failed or sent twice), by a new process
        that imports the new code. The others go on processing meanwhile."""
        self.topology, self.notes = front_topology(dict(options))
        ports = self.ports
        assert ports is not None
        for index, (spec, name) in enumerate(zip(ports.specs, ports.names, strict=True)):
            node = Atom(name)
            self.draining.add(node)
            try:
                gone = self._await(False, node) if node in self.workers else None
                await ports.supervisor.terminate_child(spec.id)
                if gone is not None:
                    await asyncio.wait_for(gone, ROLL_TIMEOUT)
            finally:
                self.draining.discard(node)
            spec, name = ports.replacement(index)
            joined = self._await(True, Atom(name))
            await ports.supervisor.start_child(spec)
            await asyncio.wait_for(joined, ROLL_TIMEOUT)
            log.info("%s: worker %s replaced by %s", self.name, node.name, name)

    def _await(self, joined: bool, node: Atom) -> asyncio.Future[None]:
        future = self._awaited[joined, node] = asyncio.get_running_loop().create_future()
        return future

    def _arrived(self, joined: bool, node: Atom) -> None:
        future = self._awaited.pop((joined, node), None)
        if future is not None and not future.done():
            future.set_result(None)

    def _node_event(self, node: Atom, up: bool) -> None:
        if not up and node in self.draining and self.stage is not None:
            self.stage.deliver((GONE, node))

    def worker_gone(self, node: Atom) -> None:
        """A worker stopped by a reload is down: what it still holds is settled (nothing,
        when it drained)."""
        worker = self.leaving.pop(node, None) or self.workers.get(node)
        if worker is not None:
            self._settle(worker, "stopped for a reload")
        self._arrived(False, node)

    def stats(self) -> list[dict[str, Any]]:
        """The workers subscribed now (one that left is not listed: its counters are kept
        for when it comes back)."""
        entries = [{"node": worker.node.name, "handled": worker.handled,
                    "failed": worker.failed, "in_flight": len(worker.held),
                    "rate": worker.rate()} for worker in self.workers.values()]
        return sorted(entries, key=lambda entry: str(entry["node"]))

    async def failed(self) -> str:
        """Wait until the workers cannot be kept running; return why."""
        assert self.failure is not None
        return await asyncio.shield(self.failure)

    def members(self) -> list[Pid]:
        """The processes announced in the pg group of this pipeline (on every node)."""
        return self.scope.get_members(group(self.name)) if self.scope is not None else []

    def _new_stage(self) -> FrontStage:
        dispatcher: Dispatcher = (
            PartitionDispatcher(self.count, hash=lambda event: self._route)
            if self.partitioned else DemandDispatcher())
        return FrontStage(self, dispatcher)

    def _stage_started(self, stage: Process) -> None:
        """A stage (first or restarted) runs. A restarted one starts with no subscription:
        what the workers held is settled as when they leave (failed, or emitted again with
        ``redeliver``: their outcomes went to the stage that died), and what the old one had
        not yet given to any worker is emitted again: those no worker saw."""
        assert isinstance(stage, FrontStage)
        old, self.stage = self.stage, stage
        if old is None:
            return
        held = set().union(*(worker.held for worker in self.workers.values()))
        reason = f"the workers' stage ended: {loggable(old.exit_reason)}"
        log.error("%s: %s; restarted", self.name, reason)
        for worker in list(self.workers.values()):
            self._settle(worker, reason)
        assert self.offloaded is not None
        for partition, entries in self.offloaded.waiting(held).items():
            self.send(partition, entries)

    def gave_up(self, reason: str) -> None:
        """The workers or their stage restarted too often: the pipeline must stop."""
        log.error("%s: %s", self.name, reason)
        if self.failure is not None and not self.failure.done():
            self.failure.set_result(reason)

    # -- what the stage reports -------------------------------------------------------------

    def worker_joined(self, subscriber: Subscriber) -> None:
        """A worker subscribed. A node is one worker (its outcomes are known by its node):
        the stage takes one subscription per node (``max_subscriptions_per_node=1``)."""
        worker = Worker(subscriber)
        counters = self.gone.pop(worker.node, None)
        if counters is not None:
            worker.handled, worker.failed = counters["handled"], counters["failed"]
        self.workers[worker.node] = worker
        log.info("%s: worker %s joined%s", self.name, worker.node.name,
                 "" if worker.partition is None else f" (partition {worker.partition})")
        self._arrived(True, worker.node)

    def worker_sent(self, subscriber: Subscriber, batch: list[Any]) -> None:
        worker = self.workers.get(subscriber.pid.node)
        if worker is not None:
            worker.held.update(map(_first, batch))

    def metadata_of(self, key: int) -> Any:
        """What an in-flight message's event carries as its metadata."""
        assert self.offloaded is not None
        # None also when settled meanwhile: its outcome will not count
        return plain_metadata(self.offloaded.metadata_of(key), {})

    def worker_outcomes(self, node: Atom | None, message: tuple[Any, ...]) -> None:
        """``{pybroadway_outcomes, _, Ok, Failed}`` as it came from ``node``, the node of its
        connection (None: no process of a peer's node sent it). Only the ids the worker of
        that node holds count, each once: nothing is acknowledged twice, and no one else's."""
        worker = None if node is None else (self.workers.get(node) or self.leaving.get(node))
        if worker is None:
            if node is None:
                self._ignored.log("%s: outcomes from an unknown sender ignored (a worker of "
                                  "an earlier version?)", self.name)
            elif node in self.gone:  # sent before it left: what it held was settled then
                log.debug("%s: outcomes of worker %s, which left, ignored", self.name,
                          node.name)
            else:
                self._ignored.log("%s: outcomes from %s, which is no worker, ignored",
                                  self.name, node.name)
            return
        ok, failed = (message[2], message[3]) if len(message) == 4 else (None, None)
        if type(ok) is not list or type(failed) is not list:
            self._ignored.log("%s: malformed outcomes from worker %s ignored: %s", self.name,
                              worker.node.name, loggable(message))
            return
        held = worker.held
        try:
            whole = held.issuperset(ok)
            if not whole:  # it stopped at an id held lacks: the others must be ids too
                frozenset(ok)
        except TypeError:  # an id that cannot be one (a list, a map)
            self._ignored.log("%s: outcomes with malformed ids from worker %s ignored: %s",
                              self.name, worker.node.name, loggable(ok))
            return
        done: Sequence[Any] = ok
        if whole:
            size = len(held)
            held.difference_update(ok)
            if size - len(held) < len(ok):  # an id repeated
                done = list(dict.fromkeys(ok))
        else:
            done = _take(held, ok)
        failures, malformed = [], 0
        for entry in failed:
            if type(entry) is not tuple or len(entry) != 3 or type(entry[0]) is not int:
                malformed += 1
            elif entry[0] in held:
                held.discard(entry[0])
                failures.append((entry[0], status_of(entry[1], entry[2])))
        ignored = len(ok) + len(failed) - len(done) - len(failures)
        if ignored:
            self._ignored.log("%s: %d outcomes from worker %s ignored (%d malformed; the "
                              "others for messages it does not hold, or repeated)", self.name,
                              ignored, worker.node.name, malformed)
        worker.handled += len(done)
        worker.failed += len(failures)
        assert self.offloaded is not None
        self.offloaded.complete(done, failures)

    def worker_left(self, subscriber: Subscriber, reason: Any) -> None:
        worker = self.workers.get(subscriber.pid.node)
        if worker is not None and worker.subscriber is subscriber:
            if worker.node in self.draining:  # a reload stops it: its outcomes still come
                self.leaving[worker.node] = self.workers.pop(worker.node)
                return
            self._settle(worker, loggable(reason))

    def _settle(self, worker: Worker, reason: str) -> None:
        """A worker's subscription ended: forget it, and fail what it held, or emit it again
        for the others (``redeliver``)."""
        self.workers.pop(worker.node, None)
        gone = self.gone
        gone[worker.node] = {"handled": worker.handled, "failed": worker.failed}
        if len(gone) > DEPARTED_LIMIT:
            del gone[next(iter(gone))]
        held = worker.held
        if not held:
            log.info("%s: worker %s left (%s)", self.name, worker.node.name, reason)
            return
        assert self.offloaded is not None and self.stage is not None
        if self.redeliver:
            entries = self.offloaded.entries(sorted(held))
            self.redelivered += len(entries)
            log.warning("%s: worker %s left (%s) holding %d messages; handed to the others",
                        self.name, worker.node.name, reason, len(entries))
            self.send(worker.partition, entries)
        else:
            why = f"worker {worker.node.name} went away: {reason}"
            self.lost += len(held)
            log.warning("%s: worker %s left (%s) holding %d messages; they fail", self.name,
                        worker.node.name, reason, len(held))
            self.offloaded.lost(sorted(held), why)


def _take(held: set[Any], ids: list[Any]) -> list[Any]:
    """The ``ids`` in ``held``, each once, in their order; taken out of ``held``."""
    taken = []
    for key in ids:
        if key in held:
            held.discard(key)
            taken.append(key)
    return taken
