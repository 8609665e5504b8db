"""Test helpers like Broadway's ``test_message``/``test_batch``.

They push data through the real topology of a running pipeline and return a future that
resolves to ``(successful, failed)`` once every message they pushed was acknowledged::

    successful, failed = await test_message(pipeline, b"hello")

:func:`kill_stage` crashes a stage, to see what the pipeline does when one fails.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import Any, Literal

from pybroadway.errors import ArgumentError

from ._message import BatchMode, Message
from ._pipeline import Pipeline

__all__ = ["StageKind", "kill_stage", "test_batch", "test_message"]


class _TestAcknowledger:
    """Resolves one future per test call once all its messages are acknowledged."""

    def __init__(self) -> None:
        self._refs = itertools.count()
        self._pending: dict[int, tuple[asyncio.Future[Any], list[Message], list[Message],
                                       list[int]]] = {}

    def register(self, count: int) -> tuple[int, asyncio.Future[Any]]:
        ref = next(self._refs)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ref] = (future, [], [], [count])
        return ref, future

    def ack(self, ack_ref: int, successful: list[Message], failed: list[Message]) -> None:
        future, ok, bad, left = self._pending[ack_ref]
        ok += successful
        bad += failed
        left[0] -= len(successful) + len(failed)
        if left[0] <= 0:
            del self._pending[ack_ref]
            if not future.done():
                future.set_result((ok, bad))


_acknowledger = _TestAcknowledger()


def test_batch(
    pipeline: Pipeline,
    batch_data: Iterable[Any],
    *,
    metadata: dict[str, Any] | None = None,
    batch_mode: BatchMode = "flush",
) -> asyncio.Future[tuple[list[Message], list[Message]]]:
    """Push one message per item of ``batch_data``; the future resolves once all are acked.

    ``batch_mode`` defaults to ``"flush"`` (as in Broadway), so batches are handled without
    waiting for ``batch_timeout``. Each message gets its own copy of ``metadata``.
    """
    items = list(batch_data)
    ref, future = _acknowledger.register(len(items))
    acknowledger = (_acknowledger, ref, None)
    messages = [
        Message(data, dict(metadata) if metadata else None, acknowledger, batch_mode=batch_mode)
        for data in items
    ]
    pipeline.push_messages(messages)
    return future


def test_message(
    pipeline: Pipeline,
    data: Any,
    *,
    metadata: dict[str, Any] | None = None,
    batch_mode: BatchMode = "flush",
) -> asyncio.Future[tuple[list[Message], list[Message]]]:
    """Push one message; the future resolves to ``(successful, failed)`` when it is acked."""
    return test_batch(pipeline, [data], metadata=metadata, batch_mode=batch_mode)


# pytest must not collect these helpers when a test module imports them.
test_batch.__test__ = False  # type: ignore[attr-defined]
test_message.__test__ = False  # type: ignore[attr-defined]


#: The stage kinds :func:`kill_stage` can crash.
StageKind = Literal["producer", "processor", "batcher", "batch_processor"]


def kill_stage(pipeline: Pipeline, kind: StageKind, index: int = 0) -> None:
    """Crash one stage of a running pipeline, as ``Process.exit(pid, :kill)`` does to a
    Broadway stage: what it held is acknowledged as failed with ``("error",
    StageCrashed(...))`` and the stage is restarted (within ``max_restarts``).

    ``kind`` and ``index`` name it: the ``index``-th producer, processor, batcher (in the order
    of the ``batchers`` option) or batch processor.
    """
    topology = pipeline._running()
    stages = topology.stages()
    if kind not in stages or not -len(stages[kind]) <= index < len(stages[kind]):
        raise ArgumentError(f"no {kind} {index} in pipeline {pipeline.options['name']}: it "
                            f"has " + ", ".join(f"{len(found)} {name}" for name, found in
                                                stages.items()))
    topology.supervisor.kill(stages[kind][index])
