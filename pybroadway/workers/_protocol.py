"""What goes between the front and its workers, besides GenStage's own messages.

- The front's :class:`~pybroadway.erldist.stages.ProducerStage` is registered as
  ``pybroadway_workers.<pipeline name>``; a worker subscribes to it (``partition: i`` when the
  pipeline is partitioned) and receives events ``{Id, Data, Metadata}``: the id the front gave
  the message, its data, and its metadata as a map, or ``same`` when it is the metadata of
  the event before it in the same batch (the first event of a batch always has a map).
- A worker reports outcomes to that stage with one plain message per acknowledgement group:
  ``{pybroadway_outcomes, WorkerNode, [Id], [{Id, Kind, Reason}]}`` — the ids that succeeded,
  and the failed ones with ``failed`` or ``error`` and a reason as a bounded binary — sent
  with a sender (SEND_SENDER): the front credits them to the node of the connection they come
  on, checked by its node, not to ``WorkerNode`` (kept for fronts of earlier versions), and
  only for ids that worker holds. Anything else is ignored with a warning.
- Workers are members of the ``pg`` scope ``pybroadway``, group = the pipeline's name (an atom).
"""

from __future__ import annotations

from typing import Any

from pybroadway.errors import PyBroadwayError
from pybroadway.pipeline import Entry
from pybroadway.term import Atom, loggable

#: The tag of a worker's report of its messages' outcomes to the front.
OUTCOMES = Atom("pybroadway_outcomes")
SAME = Atom("same")
#: The ``pg`` scope the workers join, in the group named as their pipeline.
SCOPE = "pybroadway"
FAILED = Atom("failed")
ERROR = Atom("error")
REASON_LIMIT = 300
"""Characters of a failure's reason sent back to the front (a log line's worth)."""


class WorkerError(PyBroadwayError):
    """A callback raised in a worker: the status of such a message on the front is
    ``("error", WorkerError(text))``."""


def stage_name(pipeline: str) -> Atom:
    """The registered name of the front's stage for ``pipeline``."""
    return Atom(f"pybroadway_workers.{pipeline}")


def group(pipeline: str) -> Atom:
    """The pg group the workers of ``pipeline`` join."""
    return Atom(pipeline)


def reason_of(status: Any) -> tuple[Atom, bytes]:
    """A failed message's status as ``(kind, bounded text)`` for the wire."""
    if type(status) is tuple and len(status) == 2:
        kind = ERROR if status[0] == "error" else FAILED
        reason = status[1]
        text = (f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException)
                else reason if isinstance(reason, str) else loggable(reason))
    else:
        kind, text = FAILED, loggable(status)
    if len(text) > REASON_LIMIT:
        text = text[:REASON_LIMIT - 1] + "…"
    return kind, text.encode()


def status_of(kind: Any, text: Any) -> tuple[str, Any]:
    """The front's status for a failure a worker reported (its reason bounded as a worker
    bounds it: a peer's term, whatever it is, makes a line's worth of text)."""
    reason = (text[:REASON_LIMIT * 4].decode(errors="replace") if isinstance(text, bytes)
              else loggable(text))[:REASON_LIMIT]
    if kind is ERROR:
        return ("error", WorkerError(reason))
    return ("failed", reason)


NO_METADATA: dict[str, Any] = {}  # shared, never changed


def events(entries: list[Entry]) -> list[Any]:
    """The events ``{Id, Data, Metadata}`` of in-flight messages. A producer's metadata is
    usually one mapping shared by a run of messages: the first event of a run carries it as a
    map, the others ``same`` (so it is encoded, sent and decoded once per run); a plain dict
    is sent as it is, another mapping is copied once per chunk."""
    copies: dict[int, Any] = {}
    events: list[Any] = []
    last: Any = events  # no message's metadata
    append = events.append
    for key, message in entries:
        metadata = message.raw_metadata
        if metadata is last:
            append((key, message.data, SAME))
        else:
            last = metadata
            append((key, message.data, plain_metadata(metadata, copies)))
    return events


def plain_metadata(metadata: Any, copies: dict[int, Any]) -> Any:
    """``metadata`` as a plain dict to send, copied at most once per chunk (``copies``)."""
    if not metadata:
        return NO_METADATA
    if type(metadata) is dict:
        return metadata
    copy = copies.get(id(metadata))
    if copy is None:
        copy = copies[id(metadata)] = dict(metadata)
    return copy
