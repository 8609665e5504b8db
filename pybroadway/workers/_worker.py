"""A worker: a node that runs a pipeline's processors and batchers for a front.

``pybroadway worker --join server@hostA --pipeline mod:Class --cookie C`` imports the pipeline
class by module path (so nothing is pickled), asks the front's stage for the topology it runs
(processors, batchers, partition_by, context: :mod:`._options`), builds the class with those
options and a :class:`~pybroadway.gen_stage.GenStageProducer` subscribed to the front's stage
in place of its producer, and reports each message's outcome back by the id the front gave
it. It announces itself in the ``pg`` scope ``pybroadway`` (group: the pipeline's name) and
runs until SIGTERM or SIGINT (it drains: what it holds is handled and reported), or, with
``exit_with_front``, until the front's node goes down. Without it, a lost front is subscribed
to again, with backoff, until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from pybroadway._imports import load_pipeline
from pybroadway.erldist import CallError, Node
from pybroadway.erldist.pg import api as pg
from pybroadway.erldist.process import Process
from pybroadway.erldist.tls import TlsSettings
from pybroadway.errors import ArgumentError
from pybroadway.gen_stage import GenStageProducer, MessagesFrom
from pybroadway.pipeline import Message, Pipeline
from pybroadway.term import Atom, Pid
from pybroadway.term._impl import pure_forced

from ._options import OPTIONS_REQUEST, worker_options
from ._protocol import OUTCOMES, SAME, SCOPE, group, reason_of, stage_name

log = logging.getLogger("pybroadway.workers")

OnStarted = Callable[[Pipeline, Node], Awaitable[Callable[[], Awaitable[None]] | None]]
"""What ``run_worker`` awaits once the pipeline runs; it returns what to await before it
stops (or None)."""

try:
    from pybroadway.workers._cunwrap import unwrap as built_unwrap
except ImportError:  # not built (no C compiler at install): the Python unwrapper runs
    built_unwrap = None  # type: ignore[assignment]
native_unwrap = None if pure_forced() else built_unwrap
"""The compiled message builder workers use (None: their Python one, its reference)."""


def load_pipeline_class(spec: str) -> type[Pipeline]:
    """Import ``module:Class`` (see :func:`pybroadway._imports.load_pipeline`); a class of
    ``__main__`` is refused: a worker cannot import the front's script."""
    if spec.partition(":")[0] == "__main__":
        raise ArgumentError(f"{spec}: workers import the pipeline by module path, and __main__ "
                            f"is not the front's script in a worker: define the Pipeline "
                            f"subclass in a module of its own")
    try:
        return load_pipeline(spec)
    except ValueError as exc:
        raise ArgumentError(f"{spec}: {exc}") from None


class Replier:
    """The acknowledger of a worker's messages: reports their outcomes to the front's stage,
    one message per group (``ack_ref`` is the stage, ``ack_data`` the id), sent by
    ``sender``, a process of the worker's node (the front takes the worker from it). It also
    keeps the metadata mappings seen (a producer's metadata is usually the same for many
    messages), so that each is turned back into ``str`` keys once, and shared, read-only, as
    on the front."""

    SEEN_LIMIT = 1024

    def __init__(self, node: Node, sender: Pid) -> None:
        self.node = node
        self.sender = sender
        self.seen: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        self._pending: dict[Pid, tuple[list[Any], list[Any]]] = {}
        self._flush_scheduled = False

    def ack(self, ack_ref: Pid, successful: list[Message], failed: list[Message]) -> None:
        # Outcomes are gathered and sent once per turn of the event loop: one message for
        # what every processor acknowledged meanwhile, not one per chunk (the front handles
        # far fewer frames). Sent in order, before anything this worker sends later.
        ok, bad = self._pending.get(ack_ref) or self._pending.setdefault(ack_ref, ([], []))
        ok += [message.acknowledger[2] for message in successful]
        if failed:
            bad += [(message.acknowledger[2], *reason_of(message.status)) for message in failed]
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send the outcomes gathered so far (also called once the worker's pipeline has
        stopped, so that none waits for a turn of the loop that may not come)."""
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for stage, (ok, bad) in pending.items():
            self.node.send(stage, (OUTCOMES, self.node.name, ok, bad), sender=self.sender)

    def metadata(self, raw: dict[Any, Any]) -> Mapping[str, Any]:
        """A front's metadata map (keys as binaries) as the message's metadata (asked once
        per run of events that share it)."""
        # Keyed by the values' identities: the decoder hands out one object for each pid it
        # has seen (and atoms are interned), so equal metadata has identical values, and this
        # hashes ints rather than calling each value's __hash__. A cached entry keeps its
        # values alive, so no other object can have their ids meanwhile.
        signature = (tuple(raw), tuple(map(id, raw.values())))
        known = self.seen.get(signature)
        if known is None:
            known = _metadata(raw)
            if len(self.seen) < self.SEEN_LIMIT:
                self.seen[signature] = known
        return known


def _metadata(raw: dict[Any, Any]) -> Mapping[str, Any]:
    return MappingProxyType({
        (name.decode(errors="replace") if isinstance(name, bytes) else name): value
        for name, value in raw.items()})


def unwrapper(replier: Replier, native: bool = native_unwrap is not None) -> MessagesFrom:
    """The front's events ``{Id, Data, Metadata}`` as the messages they stand for,
    acknowledged through ``replier`` (a batch at a time, each message built once; the
    metadata once per run of ``same``). ``native``: built by ``_cunwrap`` (the same
    messages, a few times faster), else by the code below, its reference."""
    converted = replier.metadata
    if native:
        build, template = built_unwrap, Message(None)
        assert build is not None, "pybroadway.workers._cunwrap is not built"

        def unwrap_natively(events: list[Any], subscription: Mapping[str, Any]
                            ) -> list[Message]:
            return build(events, template, replier, subscription["producer"], SAME, converted)

        return unwrap_natively

    def unwrap(events: list[Any], subscription: Mapping[str, Any]) -> list[Message]:
        stage = subscription["producer"]
        messages: list[Message] = []
        append = messages.append
        metadata: Mapping[str, Any] | None = None
        for key, data, raw in events:
            if raw is not SAME:
                metadata = converted(raw) if raw else None
            append(Message(data, metadata, (replier, stage, key)))
        return messages

    return unwrap


def worker_pipeline(cls: type[Pipeline], node: Node, *, join: str, name: str,
                    max_demand: int, partition: int | None,
                    concurrency: int | None = None,
                    options: dict[str, Any] | None = None,
                    replier: Replier | None = None) -> Pipeline:
    """The pipeline ``cls`` fed by the front's stage instead of its own producer, built from
    ``options`` (the front's topology, :func:`~._options.worker_options`) over the class
    attributes, as on the front; ``concurrency`` processors if given (this worker's own
    ``--concurrency``). Without ``options``, the class's processors and batchers."""
    options = dict(options or {})
    processors = {key: dict(value) for key, value in
                  (options.pop("processors", None) or cls.processors or {}).items()}
    processors.setdefault("default", {})
    if concurrency is not None:
        processors["default"]["concurrency"] = concurrency
    source: dict[str, Any] = {"max_demand": max_demand}
    if partition is not None:
        source["partition"] = partition
    module = (GenStageProducer, {"node": node, "subscribe_to": [(stage_name(name), join, source)],
                                 "resubscribe_interval": 0.2, "max_backoff": 2.0,
                                 "messages": unwrapper(replier or Replier(
                                     node, node.spawn(Process()).pid))})
    return cls(**options, name=name, offload=None, processors=processors,
               producer={"module": module, "concurrency": 1})


async def front_options(node: Node, join: str, name: str, cls: type[Pipeline],
                        stop: asyncio.Event) -> dict[str, Any] | None:
    """Ask the front's stage what to run (``{pybroadway_worker_options, Name}``), again with
    backoff until it answers; None if ``stop`` is set first."""
    delay = 0.1
    while not stop.is_set():
        try:
            reply = await node.call((stage_name(name), Atom(join)),
                                    (OPTIONS_REQUEST, Atom(name)), timeout=5.0)
        except CallError as exc:
            log.debug("worker %s: the front %s did not answer (%s); again in %.1fs",
                      node.name.name, join, exc, delay)
        else:
            return worker_options(reply, cls)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            delay = min(delay * 2, 2.0)
    return None


async def run_worker(*, join: str, pipeline: str, sname: str, name: str | None = None,
                     cookie: str | None = None, listen: str = "127.0.0.1",
                     epmd_port: int | None = None, max_demand: int = 500,
                     partition: int | None = None, concurrency: int | None = None,
                     exit_with_front: bool = False, hidden: bool = False,
                     ticktime: float = 60.0, stop: asyncio.Event | None = None,
                     tls: TlsSettings | None = None, ipv6: bool = False,
                     on_started: OnStarted | None = None) -> dict[str, Any]:
    """Run a worker until ``stop`` (or SIGTERM/SIGINT); returns its pipeline's stats.

    A worker is a visible node (``hidden``: a hidden one, see below); ``tls`` and ``ipv6``
    are its node's (its front's distribution). ``on_started(pipeline, node)`` is awaited
    once the worker's pipeline runs (``worker --dashboard-port`` starts the dashboard
    there); what it returns is awaited before the pipeline stops."""
    cls = load_pipeline_class(pipeline)
    name = name or cls.name or cls.__name__
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Visible, as a BEAM engineer expects a cluster's nodes to be: global's connect_all
    # meshes it with every node the front knows, and pg's discovery then shows it, joined to
    # the pipeline's group, to each of them (:pg.get_members/2 on an Elixir node that only
    # connected to the front). Every node of the cluster must be able to reach it then: one
    # that cannot sets off global's partition prevention, which cuts it from the rest. A
    # hidden worker (for such networks) connects to its front only, and is seen there alone.
    async with Node(sname, cookie=cookie, epmd_port=epmd_port, host=listen,
                    ticktime=ticktime, hidden=hidden, tls=tls, ipv6=ipv6) as node:
        front = Atom(join)
        if exit_with_front:
            def watch(peer: Atom, up: bool) -> None:
                if peer == front and not up and not stop.is_set():  # not its own stop
                    log.warning("worker %s: the front %s went down; stopping",
                                node.name.name, join)
                    stop.set()
            node.monitor_nodes(watch)
        scope = await pg.start(node, SCOPE)
        options = await front_options(node, join, name, cls, stop)
        if options is None:
            return {"handled": 0, "failed": 0}
        # The worker's process: announced in pg, and the sender of its outcomes.
        announcer = node.spawn(Process())
        replier = Replier(node, announcer.pid)
        instance = worker_pipeline(cls, node, join=join, name=name, max_demand=max_demand,
                                   partition=partition, concurrency=concurrency,
                                   options=options, replier=replier)
        await instance.start()
        finish = None if on_started is None else await on_started(instance, node)
        scope.join(group(name), announcer)
        log.info("worker %s serves %s for %s%s", node.name.name, name, join,
                 "" if partition is None else f" (partition {partition})")
        await stop.wait()
        if finish is not None:
            await finish()
        await instance.stop()
        replier.flush()  # the last outcomes, before the node (and its connections) stop
        stats = instance.stats()
        log.info("worker %s: handled %d, failed %d", node.name.name, stats["handled"],
                 stats["failed"])
        return stats


def read_cookie(cookie: str | None) -> str | None:
    """``--cookie``, else ``$PYBROADWAY_COOKIE`` (how a front hands it to its workers), else
    None (the node reads ~/.erlang.cookie)."""
    return cookie or os.environ.get("PYBROADWAY_COOKIE") or None

