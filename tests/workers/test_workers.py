"""Processors in worker processes on this host: every message acknowledged once on the front,
failures with their reasons, order per partition, CPU-bound work on both cores, pg members
(on the front, and on an Elixir node that only connected to the front), stats, draining on
stop, a class the workers cannot import."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest

from pybroadway.erldist import epmd
from pybroadway.erldist import flags as dflags
from pybroadway.pipeline import Pipeline
from pybroadway.term import Atom, decode
from pybroadway.workers import SCOPE, WorkerError, group
from testkit.doubles import Slow
from testkit.peers import BeamPeer
from testkit.wait import eventually_async
from tests.workers.kit import WAIT, Tally, front, front_of, push, worker_command
from tests.workers.pipelines import Batched, Echo, Ordered, Sourced, Whole


async def test_every_message_is_acknowledged_once_on_the_front() -> None:
    data = [b"m%d" % i for i in range(3000)] + [b"fail", b"raise"]
    tally = Tally(len(data))
    async with front(Echo) as (_, pipeline):
        await push(pipeline, tally.messages(data))
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
        stats = pipeline.stats()
        workers = front_of(pipeline)
        await eventually_async(lambda: len(workers.members()) == 2)
    tally.check_once()
    assert tally.failed[3000] == ("failed", "asked to fail")
    status = tally.failed[3001]
    assert status[0] == "error" and isinstance(status[1], WorkerError)
    assert "ValueError: asked to raise" in str(status[1])
    assert stats["handled"] == 3000 and stats["failed"] == 2 and stats["in_flight"] == 0
    assert len(stats["workers"]) == 2
    assert sum(w["handled"] + w["failed"] for w in stats["workers"]) == 3002
    assert {"node", "handled", "failed", "in_flight", "rate"} <= set(stats["workers"][0])


async def test_messages_keep_their_metadata_however_the_stream_is_cut() -> None:
    # A producer's metadata is one mapping shared by runs of messages (sent once per run):
    # runs cut between workers, and between small demands, must arrive whole.
    sources = [MappingProxyType({"source": name}) for name in (b"a", b"b", b"c")]
    messages = [(sources[(i // 37) % 3], i) for i in range(3000)]
    metadata = [source for source, _ in messages]
    data = [b"%s:%d" % (source["source"], i) for source, i in messages]
    tally = Tally(len(data))
    async with front(Sourced, max_demand=7) as (_, pipeline):
        await push(pipeline, tally.messages(data, metadata), chunk=100)
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
        stats = pipeline.stats()
    tally.check_once()
    assert not tally.failed, list(tally.failed.items())[:3]
    assert all(worker["handled"] > 0 for worker in stats["workers"]), stats["workers"]


async def test_big_events_reach_the_workers_whole_sent_once_from_the_front_uncopied() -> None:
    size = 1 << 20
    data = [bytes([i]) * size for i in range(48)]
    tally = Tally(len(data))
    async with front(Whole, max_demand=4) as (node, pipeline):
        sent: list[Any] = []
        for worker in front_of(pipeline).workers.values():
            connection = node.connection(worker.node)
            assert connection is not None
            encode_into = connection._output._encoder.encode_into

            def spy(out: bytearray, term: Any, apart: Any = None, *, _encode: Any = encode_into
                    ) -> None:
                held = len(apart) if apart is not None else 0
                _encode(out, term, apart)
                if apart is not None:
                    sent.extend(binary for _, binary in apart[held:])

            connection._output._encoder = SimpleNamespace(encode_into=spy)
        await push(pipeline, tally.messages(data, [{"size": size}] * len(data)), chunk=8)
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
    tally.check_once()
    assert not tally.failed, list(tally.failed.items())[:3]
    # Each event's binary went out once, as the very object the producer gave, never encoded
    # into a frame.
    assert len(sent) == len(data)
    assert {id(binary) for binary in sent} == {id(binary) for binary in data}


async def test_batchers_run_in_the_workers() -> None:
    data = [b"ok"] * 95 + [b"bad"] * 5
    tally = Tally(len(data))
    async with front(Batched) as (_, pipeline):
        await push(pipeline, tally.messages(data))
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
    tally.check_once()
    assert sorted(tally.failed) == list(range(95, 100))


async def test_a_partition_stays_on_one_worker_in_order(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("PYBROADWAY_TEST_LOG", str(tmp_path / "log"))
    count = 2000
    data = [str(i).encode() for i in range(count)]
    metadata = [{"key": i % 7} for i in range(count)]
    tally = Tally(count)
    async with front(Ordered) as (_, pipeline):
        await push(pipeline, tally.messages(data, metadata), chunk=50)
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
    tally.check_once()
    assert not tally.failed
    seen: dict[str, list[int]] = {}
    owner: dict[str, str] = {}
    for path in tmp_path.iterdir():
        for line in path.read_text().splitlines():
            key, seq = line.split()
            assert owner.setdefault(key, path.name) == path.name, f"key {key} on two workers"
            seen.setdefault(key, []).append(int(seq))
    assert len(owner) == 7 and len(set(owner.values())) == 2
    for sequence in seen.values():
        assert sequence == sorted(sequence)
    assert sum(map(len, seen.values())) == count


async def test_cpu_bound_messages_are_shared_by_the_workers() -> None:
    tally = Tally(400)
    async with front(Slow, max_demand=10) as (_, pipeline):
        await push(pipeline, tally.messages([b"x"] * 400, [{"ms": 2}] * 400))
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
        stats = pipeline.stats()
    tally.check_once()
    assert all(worker["handled"] > 50 for worker in stats["workers"]), stats["workers"]


async def test_stopping_drains_what_the_workers_hold() -> None:
    tally = Tally(300)
    async with front(Slow, max_demand=20) as (_, pipeline):
        await push(pipeline, tally.messages([b"x"] * 300, [{"ms": 5}] * 300))
        await eventually_async(lambda: pipeline.stats()["in_flight"] > 0)
    # pipeline.stop() returned: everything was handled by the workers, nothing failed
    tally.check_once()
    assert not tally.failed


async def test_the_pg_group_is_the_pipelines_name() -> None:
    async with front(Echo) as (_, pipeline):
        workers = front_of(pipeline)
        assert workers.scope is not None and workers.scope.name.name == SCOPE
        await eventually_async(lambda: len(workers.scope.get_members(group("Echo"))) == 2)
        assert {pid.node for pid in workers.members()} == {
            pid.node for pid in [w.pid for w in workers.workers.values()]}


@pytest.mark.beam
async def test_an_elixir_node_connected_to_the_front_sees_the_workers_in_pg() -> None:
    """The workers are visible nodes: an Elixir node that connects to the front only (while
    the workers join it) is meshed with them by global, and pg's discovery shows it the
    pipeline's group as the front sees it: one member on each worker's node."""
    tally = Tally(1000)
    async with front(Echo, ready=False) as (node, pipeline):
        with BeamPeer.elixir(epmd_port=node.epmd_port, cookie=node.cookie) as elixir:
            await asyncio.to_thread(elixir.wait_started)
            assert decode(await elixir.aeval(
                f"{{:ok, _}} = :pg.start(:{SCOPE}); Node.connect(:'{node.name.name}')")) is True
            workers = front_of(pipeline)
            await eventually_async(lambda: len(workers.members()) == 2, timeout=WAIT)
            members = set(workers.members())
            assert {pid.node for pid in members} == set(workers.workers)

            async def elixir_sees_them() -> bool:
                seen = decode(await elixir.aeval(
                    f":pg.get_members(:{SCOPE}, :{group('Echo').name})"))
                return set(seen) == members

            await eventually_async(elixir_sees_them, timeout=WAIT,
                                   what="the Elixir node sees both workers in pg")
            await push(pipeline, tally.messages([b"x"] * 1000))
            await asyncio.wait_for(tally.all_done.wait(), WAIT)
    tally.check_once()
    assert not tally.failed


class InMain(Pipeline):
    def handle_message(self, processor, message, context):  # type: ignore[no-untyped-def]
        return message


async def test_a_class_workers_cannot_import_is_refused_with_why() -> None:
    InMain.__module__ = "__main__"
    with pytest.raises(ValueError, match="module of its own"):
        async with front(InMain, ready=False):
            pass


async def test_workers_that_keep_crashing_stop_the_pipeline_loudly() -> None:
    async with front(Echo, ready=False, pipeline="tests.workers.pipelines:Missing",
                     max_seconds=30) as (_, pipeline):
        reason = await asyncio.wait_for(pipeline.wait_failure(), WAIT)
    assert "restarted more than 3 times" in reason


async def test_a_stage_that_keeps_dying_stops_the_pipeline_loudly() -> None:
    async with front(Echo, ready=False) as (node, pipeline):
        killed: list[Any] = []
        for _ in range(4):  # the intensity is 3 restarts in 5 s
            stage = await eventually_async(
                lambda: (pid := node.whereis("pybroadway_workers.Echo")) not in killed and pid)
            killed.append(stage)
            node.exit(stage, Atom("kill"))
        reason = await asyncio.wait_for(pipeline.wait_failure(), WAIT)
    assert "the workers or their stage were restarted more than 3 times" in reason


async def test_metrics_show_each_worker() -> None:
    import pybroadway.metrics as metrics_module
    tally = Tally(500)
    async with front(Echo) as (node, pipeline):
        await push(pipeline, tally.messages([b"x"] * 500))
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
        metrics = metrics_module.Metrics(pipeline, node)
        try:
            text = metrics.exposition()[0].decode()
        finally:
            metrics.close()
    assert 'pybroadway_workers{pipeline="Echo"} 2.0' in text
    handled = [line for line in text.splitlines()
               if line.startswith("pybroadway_worker_messages_handled_total{")]
    assert len(handled) == 2 and sum(float(line.split()[-1]) for line in handled) == 500
    assert "pybroadway_worker_messages_in_flight{" in text


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def this_hosts_address() -> str | None:
    """An IPv4 address of this host other than loopback (the one it would send from to a
    documentation address), None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # sends nothing: only picks the route
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
async def test_a_worker_joins_from_the_command_line(hidden: bool) -> None:
    tally = Tally(1000)
    async with front(Echo, ready=False, count=0) as (node, pipeline):
        workers = front_of(pipeline)
        worker = await worker_command(node, "tests.workers.pipelines:Echo", "Echo",
                                      *(["--hidden"] if hidden else []),
                                      stderr=asyncio.subprocess.DEVNULL)
        try:
            await eventually_async(lambda: len(workers.workers) == 1, timeout=WAIT)
            # no --listen: the worker listens on loopback only, as serve does
            address = await epmd.port_please(f"worker_{worker.pid}", epmd_port=node.epmd_port)
            assert address is not None
            assert await asyncio.to_thread(reachable, "127.0.0.1", address.port)
            elsewhere = this_hosts_address()
            if elsewhere is not None:
                assert not await asyncio.to_thread(reachable, elsewhere, address.port)
            connection = node.connection(next(iter(workers.workers)))
            assert connection is not None
            assert bool(connection.flags & dflags.PUBLISHED) is not hidden
            await eventually_async(lambda: len(workers.members()) == 1, timeout=WAIT)
            await push(pipeline, tally.messages([b"x"] * 1000))
            await asyncio.wait_for(tally.all_done.wait(), WAIT)
        finally:
            worker.terminate()
            out, _ = await asyncio.wait_for(worker.communicate(), WAIT)
    tally.check_once()
    assert out.decode().strip() == "handled 1000, failed 0"
