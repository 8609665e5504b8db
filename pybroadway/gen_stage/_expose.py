"""Python producers for BEAM consumers: a registered :class:`ProducerStage` a pipeline (or any
Python code) emits to."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pybroadway.erldist import Node
from pybroadway.erldist.genstage import Dispatcher, ProducerStage
from pybroadway.erldist.genstage.producer import BufferKeep
from pybroadway.pipeline import Message


def expose(node: Node, name: str, *, dispatcher: Dispatcher | None = None,
           buffer_size: int | None = 10_000, buffer_keep: BufferKeep = "last",
           max_subscriptions: int = 1024) -> ProducerStage:
    """Start a GenStage producer registered as ``name`` on ``node``: Elixir consumers
    subscribe to ``{:name, :"py@host"}`` (``GenStage.sync_subscribe(c, to: {...})`` or
    ``subscribe_to: [{{...}, max_demand: 100}]``). Feed it with ``await stage.emit(events)``,
    which waits while ``buffer_size`` events wait for the consumers' demand."""
    return node.spawn(ProducerStage(dispatcher=dispatcher, buffer_size=buffer_size,
                                    buffer_keep=buffer_keep,
                                    max_subscriptions=max_subscriptions), name=name)


async def forward(stage: ProducerStage, messages: Iterable[Message]) -> list[Message]:
    """Emit the data of ``messages`` to ``stage`` (waiting for room) and return the messages:
    the last line of a ``handle_batch`` that hands a pipeline's results to BEAM consumers."""
    batch = messages if isinstance(messages, list) else list(messages)
    await stage.emit([message.data for message in batch])
    return batch


def emitted(stage: ProducerStage) -> dict[str, Any]:
    """The stage's counters: emitted, dispatched, dropped, buffered, asked, subscriptions."""
    return {"emitted": stage.emitted, "dispatched": stage.dispatched, "dropped": stage.dropped,
            "buffered": stage.buffered, "asked": stage.asked,
            "subscriptions": len(stage.subscribers)}
