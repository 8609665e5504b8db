"""A pipeline that records what it handles, for tests and benchmarks that run it in programs of
their own (``pybroadway serve --pipeline testkit.recorded:Recorded``, its workers, ``pybroadway
worker``), and the reader of what it recorded."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pybroadway.pipeline import Message, Pipeline

PIPELINE = "testkit.recorded:Recorded"
"""The pipeline's module path, as ``--pipeline`` takes it."""


class Recorded(Pipeline):
    """Sleeps ``$PYBROADWAY_TEST_SLEEP_MS`` ms (default 0: no CPU spent, so many workers fit
    on two cores), then appends the message's data (an integer) to
    ``$PYBROADWAY_TEST_LOG.<os pid>``, one line per handled message."""

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        ms = float(os.environ.get("PYBROADWAY_TEST_SLEEP_MS", "0"))
        if ms:
            time.sleep(ms / 1000)
        path = os.environ.get("PYBROADWAY_TEST_LOG")
        if path:
            with open(f"{path}.{os.getpid()}", "a") as log:
                log.write(f"{message.data!r}\n")
        return message


def recorded(log: Path, pid: int | None = None) -> list[int]:
    """What :class:`Recorded` handled with ``$PYBROADWAY_TEST_LOG`` = ``log``: in the process
    of os pid ``pid`` in order, or in all of them."""
    paths = [log.parent / f"{log.name}.{pid}"] if pid is not None \
        else log.parent.glob(f"{log.name}.*")
    return [int(line) for path in paths if path.exists()
            for line in path.read_text().splitlines()]
