"""The test doubles the tests and the benchmarks share: pipelines a worker imports by module
path (``testkit.doubles:Slow``), and a producer that names the front's node."""

from __future__ import annotations

import time
from typing import Any

from pybroadway.erldist import Node
from pybroadway.pipeline import Message, Pipeline, Producer


def spin(seconds: float) -> None:
    """Pure-Python work for about ``seconds`` (CPU-bound: holds the GIL)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Passthrough(Pipeline):
    """Handles every message and every batch by returning it (a no-op handler)."""

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        return message

    def handle_batch(self, batcher: Any, messages: list[Message], info: Any,
                     context: Any) -> list[Message]:
        return messages


class Slow(Pipeline):
    """Each message takes ``metadata["ms"]`` ms of CPU (1 ms if it names none; 0: none)."""

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        ms = message.metadata.get("ms", 1)
        if ms:
            spin(ms / 1000)
        return message


class Front(Producer):
    """A push producer that names the front's node (workers find it there)."""

    def __init__(self, node: Node, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.node = node
