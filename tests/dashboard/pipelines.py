"""Pipelines ``pybroadway serve --pipeline`` and its workers load in the dashboard tests."""

from __future__ import annotations

from typing import Any

from pybroadway.pipeline import Message, Pipeline


class FailsOnBoom(Pipeline):
    """Handles every message, but raises on the data ``{"boom", n}``; batches pass through."""

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        data = message.data
        if isinstance(data, tuple) and data and str(data[0]) == "boom":
            raise ValueError(f"cannot handle boom number {data[1]}")
        return message

    def handle_batch(self, batcher: Any, messages: list[Message], info: Any,
                     context: Any) -> list[Message]:
        return messages
