"""A pipeline message as the ``%Broadway.Message{}`` struct Elixir would show."""

from __future__ import annotations

from typing import Any

from pybroadway.pipeline import Message, NoopAcknowledger
from pybroadway.term import Atom, struct


def _atom(value: Any) -> Any:
    return Atom(value) if isinstance(value, str) else value


def message_struct(message: Message) -> dict[Atom, Any]:
    """``message`` as a ``%Broadway.Message{}`` term, for ``inspect`` and log lines
    (``handled: %Broadway.Message{data: "How are you?", ...}``)."""
    ack, ack_ref, ack_data = message.acknowledger
    module = Atom("Elixir.Broadway.NoopAcknowledger") if ack is NoopAcknowledger else \
        Atom("Elixir." + getattr(ack, "__qualname__", type(ack).__qualname__))
    status = message.status
    if status == "ok":
        status_term: Any = Atom("ok")
    elif isinstance(status, tuple):
        status_term = (Atom(status[0]), *(repr(part) if isinstance(part, BaseException)
                                          else part for part in status[1:]))
    else:
        status_term = _atom(status)
    metadata = {_atom(key): value for key, value in message.metadata.items()}
    return struct("Broadway.Message", data=message.data, metadata=metadata,
                  acknowledger=(module, ack_ref, ack_data), batcher=_atom(message.batcher),
                  batch_key=_atom(message.batch_key), batch_mode=_atom(message.batch_mode),
                  status=status_term)
