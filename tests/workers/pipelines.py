"""Pipelines the worker tests run: workers import them by module path (the slow one is
:class:`testkit.doubles.Slow`, which the benchmarks run too)."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from pybroadway.pipeline import Message, Pipeline

FLOOD = 1_000_000


class Echo(Pipeline):
    """Handles every message; data ``b"fail..."`` fails, ``b"raise..."`` raises. The result
    records the worker's os pid in the front's log only through the outcome."""

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        data = message.data
        if isinstance(data, bytes) and data.startswith(b"fail"):
            return message.failed("asked to fail")
        if isinstance(data, bytes) and data.startswith(b"raise"):
            raise ValueError("asked to raise")
        return message


class Sourced(Pipeline):
    """Fails a message whose metadata does not say where it came from (``source``), with
    the metadata it got as the reason."""

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        if message.metadata.get("source") != message.data.partition(b":")[0]:
            return message.failed(f"metadata {dict(message.metadata)!r}")
        return message


class Whole(Pipeline):
    """Fails a message whose data is not ``metadata["size"]`` bytes, all equal to the first:
    a big event must reach the worker whole."""

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        data = message.data
        if len(data) != message.metadata["size"] or data != data[:1] * len(data):
            return message.failed(f"{len(data)} bytes arrived, not whole")
        return message


def by_key(message: Message) -> int:
    return int(message.metadata["key"])


class Ordered(Pipeline):
    """Partitioned by metadata key; handle_message records (key, seq, os pid) in a file per
    worker so the test can check order per partition."""

    partition_by = by_key

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        path = os.environ.get("PYBROADWAY_TEST_LOG")
        if path:
            with open(f"{path}.{os.getpid()}", "a") as log:
                log.write(f"{message.metadata['key']} {message.data.decode()}\n")
        return message


class Batched(Pipeline):
    """Puts every message to batcher ``db``; handle_batch fails batches containing b"bad"."""

    batchers = {"db": {"batch_size": 10, "batch_timeout": 50}}

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        return message.put_batcher("db")

    def handle_batch(self, batcher: Any, messages: list[Message], batch_info: Any,
                     context: Any) -> list[Message]:
        return [m.failed("bad") if m.data == b"bad" else m for m in messages]


talk_log = logging.getLogger("tests.workers.talker")


class Talker(Pipeline):
    """Prints and logs each message (``printed N``, ``logged N``); ``b"flood"`` prints a line
    of :data:`FLOOD` bytes, ``b"die"`` prints a line and half of another, then kills its
    worker process."""

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        data = message.data
        if data == b"flood":
            print("x" * FLOOD)
        elif data == b"die":
            talk_log.warning("dying")
            print("last words")
            print("unfinished", end="", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        else:
            print("printed", data.decode(), end="", flush=True)  # a line in two writes
            print()
            talk_log.info("logged %s", data.decode())
        return message
