"""GenStage's message protocol: the shapes of the messages, the atoms, the subscription options.

Stages are ordinary processes exchanging plain messages, so the protocol crosses nodes unchanged:

- consumer → producer: ``{:"$gen_producer", {consumer_pid, tag}, request}`` where request is
  ``{:subscribe, current, options}``, ``{:ask, demand}`` or ``{:cancel, reason}``;
- producer → consumer: ``{:"$gen_consumer", {producer_pid, tag}, payload}`` where payload is a
  non-empty list of events or ``{:cancel, reason}``.

A subscription is named by its tag (the consumer's monitor reference on the producer, as GenStage
makes it) together with the other side's pid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pybroadway.errors import ArgumentError
from pybroadway.term import Atom, Pid, loggable
from pybroadway.term.atoms import NORMAL, SHUTDOWN

if TYPE_CHECKING:
    from pybroadway._throttle import Throttle

GEN_PRODUCER = Atom("$gen_producer")
GEN_CONSUMER = Atom("$gen_consumer")
SUBSCRIBE = Atom("subscribe")
ASK = Atom("ask")
CANCEL = Atom("cancel")
NIL = Atom("nil")

# cancel reasons GenStage uses
DUPLICATED_SUBSCRIPTION = Atom("duplicated_subscription")
UNKNOWN_SUBSCRIPTION = Atom("unknown_subscription")
# ours, where GenStage would crash the producer instead (a peer must not crash us)
TOO_MANY_SUBSCRIPTIONS = Atom("too_many_subscriptions")
BAD_OPTS = Atom("bad_opts")
BAD_DEMAND = Atom("bad_demand")

# subscription options (a keyword list on the wire)
MAX_DEMAND = Atom("max_demand")
MIN_DEMAND = Atom("min_demand")
CANCEL_OPT = CANCEL
PARTITION = Atom("partition")

#: What a consumer does when its producer cancels the subscription, as GenStage's ``cancel:``.
CancelMode = Literal["permanent", "transient", "temporary"]
CANCEL_MODES: tuple[CancelMode, ...] = ("permanent", "transient", "temporary")
DEFAULT_MAX_DEMAND = 1000


def subscribe(consumer: Pid, tag: Any, options: list[tuple[Atom, Any]]) -> tuple[Any, ...]:
    return (GEN_PRODUCER, (consumer, tag), (SUBSCRIBE, NIL, options))


def ask(consumer: Pid, tag: Any, demand: int) -> tuple[Any, ...]:
    return (GEN_PRODUCER, (consumer, tag), (ASK, demand))


def cancel_producer(consumer: Pid, tag: Any, reason: Any) -> tuple[Any, ...]:
    return (GEN_PRODUCER, (consumer, tag), (CANCEL, reason))


def events(producer: Pid, tag: Any, batch: list[Any]) -> tuple[Any, ...]:
    return (GEN_CONSUMER, (producer, tag), batch)


def cancel_consumer(producer: Pid, tag: Any, reason: Any) -> tuple[Any, ...]:
    return (GEN_CONSUMER, (producer, tag), (CANCEL, reason))


def split_from(message: Any, kind: Atom) -> tuple[Pid, Any, Any] | None:
    """``(pid, tag, payload)`` of a well-formed ``{kind, {pid, tag}, payload}``, else None."""
    if type(message) is tuple and len(message) == 3 and message[0] is kind:
        from_ = message[1]
        if type(from_) is tuple and len(from_) == 2 and type(from_[0]) is Pid:
            return from_[0], from_[1], message[2]
    return None


def from_sender(sender: Pid | None, message: Any, kind: Atom, warnings: Throttle,
                stage: object) -> bool:
    """Whether a ``{kind, {Pid, Tag}, _}`` message may be taken as ``Pid``'s: only if ``Pid`` is
    on the node it came from (the node passes a peer's sender only when it is a process of
    that connection's node). Other messages pass. A message in another node's name is logged
    through ``warnings`` and must be ignored."""
    parsed = split_from(message, kind)
    if parsed is None or (sender is not None and sender.node is parsed[0].node):
        return True
    warnings.log("%r: a message in the name of %s ignored: it came from %s, not from that "
                 "process's node", stage, loggable(parsed[0]),
                 "an unknown sender" if sender is None else sender.node.name)
    return False


def tagged(message: Any, kind: Atom) -> bool:
    """Whether ``message`` is a tuple tagged ``kind`` (for one :func:`split_from` refused: a
    malformed protocol message, not one for the process's own ``handle_info``)."""
    return type(message) is tuple and len(message) > 0 and message[0] is kind


def keyword(options: Any) -> dict[str, Any]:
    """A keyword list from the wire as a dict by key name; anything else in it is skipped
    (a peer may send junk: it must not crash the stage)."""
    found: dict[str, Any] = {}
    if type(options) is list:
        for entry in options:
            if type(entry) is tuple and len(entry) == 2 and type(entry[0]) is Atom:
                found.setdefault(entry[0].name, entry[1])
    return found


def exits_on(mode: CancelMode, reason: Any) -> bool:
    """Whether a consumer whose subscription of ``mode`` ended with ``reason`` exits:
    permanent always, transient unless ``normal``, ``shutdown`` or ``{shutdown, _}``,
    temporary never."""
    if mode == "permanent":
        return True
    if mode == "temporary":
        return False
    return not (reason is NORMAL or reason is SHUTDOWN or (
        type(reason) is tuple and len(reason) == 2 and reason[0] is SHUTDOWN))


@dataclass(frozen=True)
class SubscribeOptions:
    """What a consumer asks for when it subscribes.

    ``max_demand`` (default 1000) and ``min_demand`` (default half of it) bound the events in
    flight; ``cancel`` decides whether the consumer exits when the subscription ends;
    ``partition`` names the partition of a producer with a partition dispatcher; ``extra``
    goes into the keyword list as it is.
    """

    max_demand: int = DEFAULT_MAX_DEMAND
    min_demand: int | None = None
    cancel: CancelMode = "permanent"
    partition: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if type(self.max_demand) is not int or self.max_demand < 1:
            raise ArgumentError(f"max_demand must be a positive integer, not {self.max_demand!r}")
        if self.min_demand is not None and not 0 <= self.min_demand < self.max_demand:
            raise ArgumentError(f"min_demand must be from 0 to max_demand - 1 "
                                f"({self.max_demand - 1}), not {self.min_demand!r}")
        if self.cancel not in CANCEL_MODES:
            raise ArgumentError(f"cancel must be one of {', '.join(CANCEL_MODES)}, "
                                f"not {self.cancel!r}")

    @property
    def low(self) -> int:
        """The min_demand in force (half of max_demand unless given)."""
        return self.max_demand // 2 if self.min_demand is None else self.min_demand

    def keyword(self) -> list[tuple[Atom, Any]]:
        """The keyword list sent in ``{:subscribe, nil, options}``."""
        options: list[tuple[Atom, Any]] = [
            (MAX_DEMAND, self.max_demand), (MIN_DEMAND, self.low),
            (CANCEL_OPT, Atom(self.cancel))]
        if self.partition is not None:
            options.append((PARTITION, self.partition))
        options += [(Atom(key), value) for key, value in self.extra.items()]
        return options
