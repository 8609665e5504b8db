"""The receiver: the process BEAM clients find in ``:global`` and talk to."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from itertools import repeat
from types import MappingProxyType
from typing import Any, Protocol

from pybroadway._throttle import Throttle
from pybroadway.erldist import From, GenServer
from pybroadway.term import Atom, Pid, Reference, loggable
from pybroadway.term.atoms import DOWN, ERROR, GEN_CAST, OK

from . import _global
from ._version_mismatch import advice, misunderstood

logger = logging.getLogger("pybroadway.otp_distribution")

#: The receiver's name in ``:global``, the one the library's clients look up.
DEFAULT_NAME = "off_broadway_otp_distribution_receiver"
REGISTER = Atom("register")
UNREGISTER = Atom("unregister")
PUSH_MESSAGE = Atom("push_message")
SEND_MESSAGE = Atom("send_message")
RESPOND = Atom("respond_to_pull_request")
REQUEST_MESSAGE = Atom("request_message")
PULL_MESSAGE = Atom("pull_message")


Metadata = Mapping[str, Any]
NO_METADATA: Metadata = MappingProxyType({})

COUNTED_NODES = 1000
"""Nodes whose messages :meth:`Receiver.received_by_node` counts apart (besides those of the
registered clients); the others count under None."""


class _Sender:
    """A registered client's metadata, made once, and the data messages it sent."""

    __slots__ = ("count", "metadata")

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata
        self.count = 0


class Sink(Protocol):
    """What the receiver hands data to (the connector's producer implements it).

    ``metadata[i]`` goes with ``data[i]``: ``{"client": pid, "node": node}`` of the client that
    sent it (read-only and shared by all of that client's messages), or empty when the sender
    is unknown.
    """

    def pushed(self, data: list[Any], metadata: list[Metadata]) -> None:
        """Data pushed by clients, in arrival order."""

    def answered(self, data: list[Any], metadata: list[Metadata]) -> None:
        """Answers to pull requests, in arrival order."""


class Receiver(GenServer):
    """The ``off_broadway_otp_distribution`` receiver, as a process of a Python node.

    Clients ``GenServer.call(receiver, :register)`` (answered ``:ok``; the client is monitored
    and joins the round-robin ring once, however often it registers) and
    ``GenServer.call(receiver, :unregister)``; they cast ``{:push_message, data}`` and answer
    pull requests with ``{:respond_to_pull_request, data}``. Pull requests go out as
    ``{'$gen_cast', request_atom}`` (default ``:request_message``; ``:pull_message`` for
    clients of the library's last version, which answer ``{:send_message, data}``). With
    ``pull`` set, ``{:send_message, data}`` answers a request, as in the library's last
    version; otherwise it is a push. A client that goes down leaves the ring; the first
    that went down on a pull request it had no clause for (a client of the library's other
    version) is named at WARNING with the ``request_atom`` it needs.

    :meth:`received_by_node` counts the data messages taken per sending node (one increment
    per message of a registered client; at most :data:`COUNTED_NODES` nodes apart, the rest
    under None).

    Data is batched per event-loop turn and handed to ``sink``. Unknown calls get
    ``{:error, {:unknown_call, request}}``; unknown casts and messages are logged; nothing
    crashes the receiver.
    """

    def __init__(self, sink: Sink, *, name: str = DEFAULT_NAME,
                 request_atom: str = "request_message", pull_interval: float = 5.0,
                 message_log_level: int = logging.DEBUG, pull: bool = False) -> None:
        super().__init__()
        self.sink = sink
        # In pull mode the library's last version answers a request with {send_message, Data};
        # in push mode the same cast is a push, as in the library.
        self.pull = pull
        self.name = Atom(name)
        self.request_atom = Atom(request_atom)
        self.pull_interval = pull_interval
        self.message_log_level = message_log_level
        self.clients: dict[Pid, Reference] = {}  # registration order is the ring's order
        self._ring: list[Pid] = []
        self._next = 0
        # requests sent and not yet answered, oldest first: [sent_at, client]
        self.outstanding: deque[list[Any]] = deque()
        self._wanted = 0
        self._pushed: list[Any] = []
        self._pushed_metadata: list[Metadata] = []
        self._answers: list[Any] = []
        self._answers_metadata: list[Metadata] = []
        self._senders: dict[Pid, _Sender] = {}
        self._log_data = False
        # Data messages taken from senders with no _Sender (unregistered, gone, or local:
        # None), per node; None also for the nodes beyond COUNTED_NODES, to stay bounded.
        self._received_apart: dict[Atom | None, int] = {}
        self._flush_scheduled = False
        self._paused: set[Atom] = set()
        self._paused_wanted = False
        self._draining = False
        self._timer: asyncio.TimerHandle | None = None
        # Any process can send anything: what is not the protocol is logged, but a flood of
        # it only a few lines a second.
        self._unknown = Throttle(logger, logging.WARNING, "unknown requests")
        self._mismatch_told = False  # a client of the other version was recognised

    # -- registration ------------------------------------------------------------------------

    async def register_global(self, timeout: float = 10.0) -> bool:
        """Register this receiver in ``:global`` under its name (it is registered locally by
        ``node.spawn(receiver, name=...)``); False if that failed or timed out."""
        return await _global.register_name(self.node, self.name, self.pid, timeout)

    def handle_call(self, request: Any, from_: From) -> Any:
        """``:register`` / ``:unregister``; anything else gets an error reply."""
        if request is REGISTER:
            logger.info("register: %s", loggable((from_.pid, from_.tag)))
            self._add(from_.pid)
            return OK
        if request is UNREGISTER:
            logger.info("unregister: %s", loggable((from_.pid, from_.tag)))
            self._remove(from_.pid, demonitor=True)
            return OK
        self._unknown.log("unknown call from %s: %s", loggable(from_.pid), loggable(request))
        return (ERROR, (Atom("unknown_call"), request))

    def _add(self, pid: Pid) -> None:
        if pid in self.clients:
            return
        self.clients[pid] = self.monitor(pid)
        self._ring.append(pid)
        if self._paused_wanted:
            self._pause(pid.node)
        self._send_requests()

    def _remove(self, pid: Pid, *, demonitor: bool) -> None:
        ref = self.clients.pop(pid, None)
        if ref is None:
            return
        known = self._senders.pop(pid, None)
        if known is not None:
            self._count_apart(pid.node, known.count)
        if demonitor:
            self.demonitor(ref)
        index = self._ring.index(pid)
        del self._ring[index]
        if index < self._next:
            self._next -= 1
        if self._next >= len(self._ring):
            self._next = 0
        # Its unanswered requests will not be answered: ask the others instead.
        lost = [entry for entry in self.outstanding if entry[1] == pid]
        if lost:
            self.outstanding = deque(entry for entry in self.outstanding if entry[1] != pid)
            self._send_requests()

    # -- data --------------------------------------------------------------------------------

    def deliver_from(self, sender: Pid | None, message: Any) -> None:
        """Data casts are taken here, as they come off the connection, with their sender:
        no mailbox hop for the messages that make up the stream. The rest queue as usual."""
        self.deliver_all_from(sender, [message])

    def deliver_all_from(self, sender: Pid | None, messages: list[Any]) -> None:
        """:meth:`deliver_from` for a connection's run of sends, taken in one pass."""
        for message in self._take(sender, messages):
            self.deliver(message)

    def handle_cast(self, request: Any) -> None:
        """Casts that did not come through :meth:`deliver_from` (local senders): the same
        data casts; anything else is logged."""
        if self._take(None, [(GEN_CAST, request)]):
            self._unknown.log("unknown cast: %s", loggable(request))

    def _take(self, sender: Pid | None, messages: list[Any]) -> list[Any]:
        """Take the data casts among ``messages``, all from ``sender``:
        ``{:push_message, data}``, ``{:respond_to_pull_request, data}`` and their later
        names; the other messages are returned, in order."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # Whether the data is logged is asked once per turn of the loop, not per message.
            self._log_data = logger.isEnabledFor(self.message_log_level)
            asyncio.get_running_loop().call_soon(self._flush)
        log_data = self._log_data
        send_pushes = not self.pull
        pushed: list[Any] = []
        answers: list[Any] = []
        others: list[Any] = []
        for message in messages:
            if type(message) is tuple and len(message) == 2 and message[0] is GEN_CAST:
                request = message[1]
                if type(request) is tuple and len(request) == 2:
                    kind, data = request
                    if kind is PUSH_MESSAGE or (kind is SEND_MESSAGE and send_pushes):
                        pushed.append(data)
                    elif kind is RESPOND or kind is SEND_MESSAGE:
                        answers.append(data)
                    else:
                        others.append(message)
                        continue
                    if log_data:
                        logger.log(self.message_log_level, "%s: %s", kind.name, loggable(data))
                    continue
            others.append(message)
        taken = len(pushed) + len(answers)
        if taken:
            metadata = self._metadata(sender, taken)
            if pushed:
                self._pushed += pushed
                self._pushed_metadata += repeat(metadata, len(pushed))
            if answers:
                for _ in answers:
                    self._retire(sender)
                self._answers += answers
                self._answers_metadata += repeat(metadata, len(answers))
        return others

    def _metadata(self, sender: Pid | None, count: int) -> Metadata:
        """The metadata of ``sender``'s data, of which ``count`` more came."""
        known = None if sender is None else self._senders.get(sender)
        if known is not None:
            known.count += count
            return known.metadata
        if sender is None:
            self._count_apart(None, count)
            return NO_METADATA
        metadata = MappingProxyType({"client": sender, "node": sender.node})
        # Kept for registered clients only, whose state _remove frees: any pid may cast, and
        # a record for every sender would grow for as long as the node runs.
        if sender in self.clients:
            known = self._senders[sender] = _Sender(metadata)
            known.count = count
        else:
            self._count_apart(sender.node, count)
        return metadata

    def _count_apart(self, node: Atom | None, count: int) -> None:
        counts = self._received_apart
        if node not in counts and len(counts) >= COUNTED_NODES:
            node = None
        counts[node] = counts.get(node, 0) + count

    def received_by_node(self) -> dict[Atom | None, int]:
        """Data messages taken, per sending node (None: local senders, and the nodes beyond
        the first :data:`COUNTED_NODES` of those that were not registered clients)."""
        counts = dict(self._received_apart)
        for pid, known in self._senders.items():
            counts[pid.node] = counts.get(pid.node, 0) + known.count
        return counts

    def _retire(self, sender: Pid | None) -> None:
        """An answer came: retire the sender's oldest request. A sender with none out is
        answering a request already asked again of another client, which is still out and
        still counts; an unknown sender retires the oldest of all."""
        outstanding = self.outstanding
        if not outstanding:
            return
        if sender is None or outstanding[0][1] == sender:
            outstanding.popleft()
            return
        for index, entry in enumerate(outstanding):
            if entry[1] == sender:
                del outstanding[index]
                return

    def handle_info(self, message: Any) -> None:
        """A client's ``:DOWN`` removes it; anything else is logged."""
        if type(message) is tuple and len(message) == 5 and message[0] is DOWN:
            pid = message[3]
            if self.clients.get(pid) == message[1]:
                logger.info("client %s down: %s", loggable(pid), loggable(message[4]))
                if not self._mismatch_told and misunderstood(message[4], self.request_atom):
                    # Every client of that version crashes on every request: once is enough.
                    self._mismatch_told = True
                    logger.warning("client %s of %s crashed on :%s: %s", loggable(pid),
                                   pid.node.name, self.request_atom.name,
                                   advice(self.request_atom))
                self._remove(pid, demonitor=False)
                return
        self._unknown.log("unexpected message: %s", loggable(message))

    def _flush(self) -> None:
        # Everything that arrived in one turn of the event loop goes to the sink at once.
        self._flush_scheduled = False
        if self._pushed:
            pushed, self._pushed = self._pushed, []
            metadata, self._pushed_metadata = self._pushed_metadata, []
            self.sink.pushed(pushed, metadata)
        if self._answers:
            answers, self._answers = self._answers, []
            metadata, self._answers_metadata = self._answers_metadata, []
            self.sink.answered(answers, metadata)
            self._send_requests()

    # -- pull --------------------------------------------------------------------------------

    def want(self, count: int) -> None:
        """Keep ``count`` pull requests in flight (the unmet demand), round robin over the
        clients; requests already out count, none are sent beyond it."""
        self._wanted = count
        if count and self._timer is None and self.alive:
            self._timer = asyncio.get_running_loop().call_later(self.pull_interval, self._tick)
        self._send_requests()

    def _send_requests(self) -> None:
        # Answers received but not yet handed to the sink still count against the demand.
        missing = self._wanted - len(self.outstanding) - len(self._answers)
        ring = self._ring
        if missing <= 0 or not ring or not self.alive:
            return
        now = time.monotonic()
        message = (GEN_CAST, self.request_atom)
        # The requests are the protocol's chatter, not the data: DEBUG, whatever the level of
        # the data's lines (else pull mode says three lines per message where push says two).
        log_it = logger.isEnabledFor(logging.DEBUG)
        for _ in range(missing):
            if self._next >= len(ring):
                self._next = 0
            client = ring[self._next]
            self._next += 1
            self.send(client, message)
            self.outstanding.append([now, client])
            if log_it:
                logger.debug("%s: %s", self.request_atom.name, loggable(client))

    def _tick(self) -> None:
        # Requests unanswered for a whole interval are asked again (of the next clients).
        self._timer = None
        if not self.alive:
            return
        deadline = time.monotonic() - self.pull_interval
        stale = 0
        while self.outstanding and self.outstanding[0][0] <= deadline:
            self.outstanding.popleft()
            stale += 1
        if stale:
            logger.info("%d pull requests unanswered after %ss: asking again", stale,
                        self.pull_interval)
        self._send_requests()
        if self._wanted:
            self._timer = asyncio.get_running_loop().call_later(self.pull_interval, self._tick)

    # -- backpressure ------------------------------------------------------------------------

    def pause_clients(self) -> None:
        """Stop reading from the connections of the registered clients' nodes."""
        self._paused_wanted = True
        for pid in self._ring:
            self._pause(pid.node)

    def _pause(self, node: Atom) -> None:
        if node is self.node.name or node in self._paused:
            return
        connection = self.node.connection(node)
        if connection is not None:
            connection.pause_reading()
            self._paused.add(node)

    def drain(self) -> None:
        """Take no more data, for good: ask for nothing, stop reading from every client's
        connection (what they send next stays with them), and hand over what has arrived."""
        self._draining = True
        self.want(0)
        self.pause_clients()
        self._flush()

    def resume_clients(self) -> None:
        """Read from every connection :meth:`pause_clients` paused (not while draining)."""
        if not self._draining:
            self._resume_all()

    def _resume_all(self) -> None:
        self._paused_wanted = False
        for node in self._paused:
            connection = self.node.connection(node)
            if connection is not None:
                connection.resume_reading()
        self._paused.clear()

    async def terminate(self, reason: Any) -> None:
        """Stop the timer and let every paused connection read again."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._resume_all()
