"""Workers run what the front runs: batchers, partition_by and context given to the front as
arguments only reach them (from the front, when they join), also a worker started by hand; a
context that does not cross is said and replaced by the class's; a partition_by a worker
cannot import is refused before any worker starts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pybroadway.erldist import Node
from pybroadway.pipeline import Pipeline
from pybroadway.term import Atom, decode, encode
from pybroadway.workers import WorkerFront
from pybroadway.workers._options import (
    front_topology,
    function_path,
    pack,
    sendable,
    unpack,
    worker_options,
)
from testkit.peers import free_port, unique_name
from testkit.wait import eventually_async
from tests.workers.given import CLASS_CONTEXT, Recorder, by_key
from tests.workers.kit import WAIT, Front, Tally, front_of, push, worker_command


@contextlib.asynccontextmanager
async def started(cls: type[Pipeline], workers: dict[str, Any], **options: Any
                  ) -> AsyncIterator[tuple[Node, Pipeline]]:
    async with Node(f"{unique_name('topo')}@localhost", cookie="workers-test",
                    epmd_port=free_port()) as node:
        pipeline = cls(producer={"module": (Front, {"node": node})},
                       processors={"default": {"concurrency": 2}},
                       offload=(WorkerFront, workers), **options)
        await pipeline.start()
        try:
            yield node, pipeline
        finally:
            await pipeline.stop()


def batches(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """The batches each worker process handled, by the file it wrote (one per os pid)."""
    return {path.name: [json.loads(line) for line in path.read_text().splitlines()]
            for path in tmp_path.iterdir()}


async def test_arguments_only_batchers_partition_by_and_context_reach_the_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYBROADWAY_TEST_LOG", str(tmp_path / "batches"))
    context = {"table": "orders", "raw": b"\x00\xff", "limits": (1, 2.5, [True, None])}
    per_key, keys = 70, 7  # workers get keys 0, 2, 4, 6 and 1, 3, 5: multiples of 7 each
    data = [str(i).encode() for i in range(per_key * keys)]
    metadata = [{"key": i % keys} for i in range(per_key * keys)]
    tally = Tally(len(data))
    async with started(Recorder, {"count": 2},
                       batchers={"db": {"batch_size": 7, "batch_timeout": 60_000}},
                       partition_by=by_key, context=context) as (_, pipeline):
        await eventually_async(lambda: len(front_of(pipeline).workers) == 2, timeout=WAIT)
        await push(pipeline, tally.messages(data, metadata), chunk=50)
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
    tally.check_once()
    assert not tally.failed
    seen = batches(tmp_path)
    assert len(seen) == 2 and f"batches.{os.getpid()}" not in seen  # in the two workers
    lines = [line for worker in seen.values() for line in worker]
    # batch_timeout is a minute away: every batch is full at the front's batch_size
    assert {(line["batcher"], line["size"], line["trigger"]) for line in lines} == {
        ("db", 7, "size")}
    assert sum(line["size"] for line in lines) == len(data)
    assert {line["context"] for line in lines} == {repr(context)}
    for key in range(keys):  # a partition stays on one worker
        holders = {name for name, worker in seen.items() for line in worker
                   if key in line["keys"]}
        assert len(holders) == 1, f"key {key} on {holders}"


async def test_a_worker_started_by_hand_gets_them_and_an_unsendable_context_is_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    monkeypatch.setenv("PYBROADWAY_TEST_LOG", str(tmp_path / "batches"))
    caplog.set_level(logging.WARNING, logger="pybroadway.workers")
    tally = Tally(30)
    async with started(Recorder, {"count": 0},
                       batchers={"db": {"batch_size": 10, "batch_timeout": 60_000}},
                       context={"a set": {1, 2}}) as (node, pipeline):
        worker = await worker_command(node, "tests.workers.given:Recorder", "Recorder")
        try:
            await eventually_async(lambda: len(front_of(pipeline).workers) == 1, timeout=WAIT)
            await push(pipeline, tally.messages([b"x"] * 30))
            await asyncio.wait_for(tally.all_done.wait(), WAIT)
        finally:
            worker.terminate()
            out, err = await asyncio.wait_for(worker.communicate(), WAIT)
    tally.check_once()
    assert out.decode().strip() == "handled 30, failed 0"
    lines = [line for worker_lines in batches(tmp_path).values() for line in worker_lines]
    assert [(line["size"], line["trigger"]) for line in lines] == [(10, "size")] * 3
    assert {line["context"] for line in lines} == {repr(CLASS_CONTEXT)}
    said = [record.getMessage() for record in caplog.records if "context" in record.getMessage()]
    assert len(said) == 1 and "does not cross to the workers (set values" in said[0]
    assert "the front's context did not cross (set values do not cross to workers)" \
        in err.decode()


async def test_a_partition_by_workers_cannot_import_is_refused_before_they_start() -> None:
    def local(message: Any) -> int:
        return 0

    for function, why in ((lambda message: 0, "<lambda>"), (local, "local")):
        with pytest.raises(ValueError, match=f"workers import partition_by by module path, "
                                             f"and .*{why}.* cannot be imported so"):
            async with started(Recorder, {"count": 2}, partition_by=function):
                pass


def test_values_cross_unchanged_or_are_refused_with_why() -> None:
    for value in (None, "s", b"b", 1, 2.5, True, Atom("a"), (1, "x", b"y"), [b"", ""],
                  {"k": {b"k": [None, (Atom("pybroadway"), b"z")]}}):
        packed, why = sendable(value)
        assert why is None and unpack(decode(encode(packed))) == value
        assert unpack(decode(encode(pack(value)))) == value
    assert sendable({1, 2}) == (None, "set values do not cross to workers")
    assert sendable((Atom("pybroadway_bytes"), b"x"))[1] == (
        "a tuple starting with the atom pybroadway_bytes is reserved")
    assert sendable(object())[1] == "object values do not cross to workers"


def test_partition_by_crosses_as_an_import_path() -> None:
    assert function_path(by_key) == "tests.workers.given:by_key"

    def main() -> None: ...
    main.__module__ = "__main__"
    main.__qualname__ = "main"
    with pytest.raises(ValueError, match=r"main \(in __main__\) cannot be imported so"):
        function_path(main)


def test_the_topology_from_the_front_builds_the_workers_pipeline() -> None:
    executor = ThreadPoolExecutor(1)
    try:
        front = Recorder(producer={"module": (Front, {"node": None})},
                         processors={"default": {"concurrency": 3, "max_demand": 20,
                                                 "executor": "thread"}},
                         batchers={"db": {"batch_size": 5, "executor": executor},
                                   "s3": {"partition_by": by_key}},
                         context=[1, "two"], shutdown=1234)
        topology, notes = front_topology(front.options)
    finally:
        executor.shutdown()
    assert notes == [f"batchers.db.executor {executor!r} stays on the front (an Executor object "
                     f"does not cross): the workers use their class's"]
    options = worker_options((Atom("ok"), decode(encode(topology))), Recorder)
    assert options["processors"]["default"] == {
        "concurrency": 3, "max_demand": 20, "min_demand": 10, "partition_by": None,
        "executor": "thread"}
    assert options["batchers"]["db"] == {"concurrency": 1, "batch_size": 5,
                                         "batch_timeout": 1000, "partition_by": None}
    assert options["batchers"]["s3"]["partition_by"] is by_key
    assert (options["context"], options["shutdown"], options["partition_by"]) == (
        [1, "two"], 1234, None)
