"""Message: defaults, operations, acknowledgement helpers."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from pybroadway.pipeline import Message, NoopAcknowledger, ack_messages

from .helpers import Recorder


def test_defaults_inspect_like_broadway() -> None:
    message = Message(b"x")
    assert message.acknowledger == (NoopAcknowledger, None, None)
    assert (message.batcher, message.batch_key, message.batch_mode, message.status) == (
        "default", "default", "bulk", "ok")
    assert message.metadata == {}
    assert repr(message) == (
        "Message(data=b'x', metadata={}, acknowledger=(NoopAcknowledger, None, None), "
        "batcher='default', batch_key='default', batch_mode='bulk', status='ok')")
    assert not hasattr(message, "__dict__")


def test_raw_metadata_is_the_metadata_as_given_and_creates_none() -> None:
    given = MappingProxyType({"source": 1})
    assert Message(b"x", given).raw_metadata is given
    message = Message(b"x")
    assert repr(message).startswith("Message(data=b'x', metadata={},")
    assert message.raw_metadata is None  # neither reading it nor repr created a dict
    assert message.metadata == {} and message.raw_metadata == {}  # metadata creates one
    message.metadata = given
    assert message.raw_metadata is given
    with pytest.raises(AttributeError):
        message.raw_metadata = {}  # type: ignore[misc]


def test_operations_chain_and_change_the_message() -> None:
    message = (Message(2).update_data(lambda d: d * 10).put_batcher("s3")
               .put_batch_key("k").put_batch_mode("flush"))
    assert (message.data, message.batcher, message.batch_key, message.batch_mode) == (
        20, "s3", "k", "flush")
    assert message.put_data(3).data == 3
    assert message.failed("boom").status == ("failed", "boom")
    with pytest.raises(ValueError, match="batch_mode"):
        message.put_batch_mode("later")


def test_ack_immediately_acks_once() -> None:
    recorder = Recorder()
    message = Message(1, None, (recorder, "r", None))
    assert message.ack_immediately() is message
    assert [(ref, [m.data for m in ok], bad) for ref, ok, bad in recorder.calls] == [
        ("r", [1], [])]
    assert message.acknowledger == (NoopAcknowledger, None, None)
    failing = Message(2, None, (recorder, "r", None)).failed("x").ack_immediately()
    assert recorder.calls[-1][2] == [failing]


def test_configure_ack() -> None:
    class Configurable(Recorder):
        def configure(self, ack_ref: Any, ack_data: Any, options: dict[str, Any]) -> Any:
            return {**(ack_data or {}), **options}

    acker = Configurable()
    message = Message(1, None, (acker, "r", None)).configure_ack(on_failure="requeue")
    assert message.acknowledger == (acker, "r", {"on_failure": "requeue"})
    with pytest.raises(TypeError, match="does not implement configure"):
        Message(1, None, (Recorder(), "r", None)).configure_ack(x=1)


def test_ack_messages_groups_per_acknowledger_and_ref() -> None:
    first, second = Recorder(), Recorder()
    ok = [Message(i, None, (first if i % 2 else second, i % 3, None)) for i in range(12)]
    bad = [Message(-1, None, (first, 1, None)), Message(-2, None, (first, [1], None))]
    ack_messages(ok, bad)
    seen = sorted((str(ref), [m.data for m in s], [m.data for m in f])
                  for ref, s, f in first.calls)
    assert seen == [("0", [3, 9], []), ("1", [1, 7], [-1]), ("2", [5, 11], []),
                    ("[1]", [], [-2])]
    assert sorted((ref, [m.data for m in s]) for ref, s, _ in second.calls) == [
        (0, [0, 6]), (1, [4, 10]), (2, [2, 8])]


def test_a_failing_acknowledger_does_not_stop_the_others(caplog: Any) -> None:
    class Broken:
        def ack(self, *args: Any) -> None:
            raise RuntimeError("down")

    recorder = Recorder()
    ack_messages([Message(1, None, (Broken(), None, None)),
                  Message(2, None, (recorder, None, None))], [])
    assert recorder.count == 1
    assert "down" in caplog.text
