"""What the worker tests share: a front node on a private EPMD port (its producer,
:class:`testkit.doubles.Front`, names the node), an acknowledger that counts every
acknowledgement of every message."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pybroadway.erldist import Node
from pybroadway.pipeline import Message, Pipeline
from pybroadway.workers import WorkerFront
from testkit.doubles import Front
from testkit.peers import free_port, unique_name
from testkit.wait import eventually_async

WAIT = 60.0


class Tally:
    """Counts acknowledgements per message id: ``acks[i]`` must end at exactly 1."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.acks: Counter[int] = Counter()
        self.failed: dict[int, Any] = {}
        self.all_done = asyncio.Event()

    def ack(self, ack_ref: Any, successful: list[Message], failed: list[Message]) -> None:
        for message in successful:
            self.acks[message.acknowledger[2]] += 1
        for message in failed:
            self.acks[message.acknowledger[2]] += 1
            self.failed[message.acknowledger[2]] = message.status
        if len(self.acks) >= self.expected:
            self.all_done.set()

    def messages(self, data: list[Any], metadata: list[Mapping[str, Any]] | None = None
                 ) -> list[Message]:
        return [Message(item, None if metadata is None else metadata[i], (self, None, i))
                for i, item in enumerate(data)]

    def check_once(self) -> None:
        assert len(self.acks) == self.expected
        assert set(self.acks.values()) == {1}, "a message was acknowledged more than once"


@contextlib.asynccontextmanager
async def front(cls: type[Pipeline], *, ready: bool = True, **workers: Any
                ) -> AsyncIterator[tuple[Node, Pipeline]]:
    """A started pipeline of ``cls`` with workers (``workers`` options) on a fresh node."""
    async with Node(f"{unique_name('front')}@localhost", cookie="workers-test",
                    epmd_port=free_port()) as node:
        pipeline = cls(producer={"module": (Front, {"node": node})},
                       processors={"default": {"concurrency": 2}},
                       offload=(WorkerFront, {"count": 2, **workers}))
        await pipeline.start()
        try:
            if ready:
                await eventually_async(lambda: len(front_of(pipeline).workers) == 2,
                                       timeout=WAIT)
            yield node, pipeline
        finally:
            await pipeline.stop()


async def push(pipeline: Pipeline, messages: list[Message], chunk: int = 200) -> None:
    """Push with the producer's backpressure (lossless)."""
    producer = pipeline.producers[0]
    for start in range(0, len(messages), chunk):
        if not pipeline.push_messages(messages[start:start + chunk]):
            await producer.wait_for_room()


def front_of(pipeline: Pipeline) -> Any:
    """The pipeline's WorkerFront."""
    offload = pipeline.offloaded()
    assert offload is not None
    return offload


async def worker_command(node: Node, pipeline: str, name: str, *options: str,
                         stderr: int = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    """``pybroadway worker`` joining ``node``'s pipeline ``name`` (``pipeline``: module:Class),
    with the front's cookie (and listening where a worker listens by default: on loopback);
    its stdout is a pipe."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pybroadway", "worker", "--join", node.name.name,
        "--pipeline", pipeline, "--name", name, "--quiet",
        "--epmd-port", str(node.epmd_port), *options,
        env={**os.environ, "PYBROADWAY_COOKIE": node.cookie},
        stdout=asyncio.subprocess.PIPE, stderr=stderr)
