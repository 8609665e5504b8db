"""A pipeline whose batchers, partition_by and context the front is given as arguments only:
the class sets none of them (but a context of its own, which arguments override). Workers
import it by module path; handle_batch records each batch in a file per worker process."""

from __future__ import annotations

import json
import os
from typing import Any

from pybroadway.pipeline import Message, Pipeline

CLASS_CONTEXT = "the class attribute"


def by_key(message: Message) -> int:
    return int(message.metadata["key"])


class Recorder(Pipeline):
    """Puts every message to batcher ``db``; each batch is a line in
    ``$PYBROADWAY_TEST_LOG.<os pid>``: batcher, size, keys, repr(context)."""

    context = CLASS_CONTEXT

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        return message.put_batcher("db")

    def handle_batch(self, batcher: Any, messages: list[Message], batch_info: Any,
                     context: Any) -> list[Message]:
        with open(f"{os.environ['PYBROADWAY_TEST_LOG']}.{os.getpid()}", "a") as out:
            out.write(json.dumps({
                "batcher": batcher, "size": len(messages), "context": repr(context),
                "keys": sorted({message.metadata.get("key", -1) for message in messages}),
                "trigger": batch_info.trigger}) + "\n")
        return messages
