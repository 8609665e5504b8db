"""The dashboard's server without a browser: a viewer that reads nothing is dropped while the
others go on, viewers and connections are capped, ``/metrics`` is the metrics module's text,
and ``--dashboard-port`` is checked as a flag (its extra missing: one line, exit 2). With the
stage counters the page draws from: busy time, and the ring of recent failures."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pybroadway.dashboard import Dashboard, DashboardLimits, start_dashboard
from pybroadway.dashboard._snapshot import FAILURES, Sampler
from pybroadway.erldist import Node
from pybroadway.erldist.stages import ProducerStage
from pybroadway.metrics import Metrics
from pybroadway.pipeline import Message, Pipeline, Producer
from pybroadway.pipeline._callback_log import RECENT
from testkit.browser import open_stream
from testkit.doubles import spin
from testkit.peers import free_port, unique_name
from testkit.wait import eventually_async
from tests.erldist.stages_kit import nodes
from tests.gen_stage.helpers import pipeline

ROOT = Path(__file__).resolve().parents[2]


class Raises(Pipeline):
    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        if message.data == "boom":
            raise ValueError("no booms")
        spin(0.01)
        return message


@pytest.fixture
async def running() -> AsyncIterator[tuple[Pipeline, Dashboard]]:
    async with Node(f"{unique_name('dashview')}@localhost", cookie="c",
                    epmd_port=free_port()) as node:
        pipeline = Raises(producer={"module": (Producer, {"buffer_size": None})},
                          processors={"default": {"concurrency": 2}})
        async with pipeline, await start_dashboard(
                pipeline, node, 0, interval=0.02,
                limits=DashboardLimits(max_viewers=3, max_connections=6,
                                       viewer_send_buffer=8192)) as dashboard:
            yield pipeline, dashboard


async def read_events(port: int, count: int) -> list[bytes]:
    """Open the stream and read ``count`` events."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0] and b"text/event-stream" in head
        return [await reader.readuntil(b"\n\n") for _ in range(count)]
    finally:
        writer.close()


async def get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    try:
        return await reader.read()
    finally:
        writer.close()


async def test_a_viewer_that_reads_nothing_is_dropped_and_the_rest_goes_on(
        running: tuple[Pipeline, Dashboard]) -> None:
    pipeline, dashboard = running
    stalled = open_stream(dashboard.port, receive_buffer=1024)
    try:
        await eventually_async(lambda: len(dashboard.viewers) == 1)
        pipeline.push_messages([Message(i) for i in range(50)])
        reading = asyncio.ensure_future(read_events(dashboard.port, 10_000))
        await eventually_async(lambda: len(dashboard.viewers) == 2)
        # The stalled one fills its socket and its backlog, then goes; the reader stays.
        await eventually_async(lambda: len(dashboard.viewers) == 1, timeout=20)
        assert not reading.done()
        assert b'"handled":50' in await get(dashboard.port, "/api/snapshot")
        stalled.settimeout(5)
        with pytest.raises(OSError):  # the server reset it: drain what came, then the end
            while stalled.recv(65536):
                pass
            raise ConnectionResetError("closed")
        reading.cancel()
    finally:
        stalled.close()


async def test_viewers_and_connections_are_capped(running: tuple[Pipeline, Dashboard]) -> None:
    _, dashboard = running
    viewers = [open_stream(dashboard.port) for _ in range(3)]
    try:
        await eventually_async(lambda: len(dashboard.viewers) == 3)
        assert b" 503 " in await get(dashboard.port, "/api/stream")
        idle = [socket.create_connection(("127.0.0.1", dashboard.port)) for _ in range(3)]
        try:
            assert b"too many connections" in await get(dashboard.port, "/api/snapshot")
        finally:
            for sock in idle:
                sock.close()
    finally:
        for sock in viewers:
            sock.close()
    await eventually_async(lambda: not dashboard.viewers)
    assert b" 200 " in await get(dashboard.port, "/api/snapshot")


async def test_metrics_are_the_metrics_module_text(running: tuple[Pipeline, Dashboard]) -> None:
    pipeline, dashboard = running
    served = (await get(dashboard.port, "/metrics")).partition(b"\r\n\r\n")[2]
    text, _ = Metrics(pipeline, dashboard.node).exposition()

    def families(body: bytes) -> list[bytes]:
        return [line for line in body.splitlines() if line.startswith(b"# TYPE")]

    assert families(served) == families(text) and b"pybroadway_messages_handled_total" in text


async def test_busy_time_and_recent_failures_are_counted(
        running: tuple[Pipeline, Dashboard]) -> None:
    pipeline, dashboard = running
    before = time.monotonic()
    pipeline.push_messages([Message(i) for i in range(20)] + [Message("boom")] * (RECENT + 5))
    await eventually_async(lambda: pipeline.stats()["failed"] == RECENT + 5)
    busy = pipeline.stage_stats()["processors"][0]["busy"]
    assert 0.2 <= busy <= 2 * (time.monotonic() - before)  # 20 x 10 ms, over 2 processors
    count, recent = pipeline.recent_failures()
    assert count == RECENT + 5 and len(recent) == RECENT
    assert recent[-1][1:] == ("handle_message", "ValueError: no booms", "boom")
    await eventually_async(lambda: len(dashboard.sampler.snapshot["failures"]) == FAILURES)
    row = dashboard.sampler.snapshot["failures"][0]
    assert row["error"] == "ValueError: no booms" and row["data"] == '"boom"'


def serve(*flags: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys; {prelude}from pybroadway.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "serve", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("flags", "prelude", "says"), [
    (["--dashboard-port", "70000"], "",
     "invalid value for --dashboard-port: expected at most 65,535, got: 70000"),
    (["--dashboard-port", "8080"], "sys.modules['aiohttp'] = None; ",
     "--dashboard-port needs aiohttp: pip install '.[dashboard]'"),
])
def test_a_bad_dashboard_flag_is_one_line_and_exit_2(flags: list[str], prelude: str,
                                                     says: str) -> None:
    done = serve(*flags, prelude=prelude)
    assert (done.returncode, done.stderr.strip().splitlines()) == (
        2, [f"pybroadway serve: {says}"])


async def test_genstage_subscriptions_both_ways_with_their_demand() -> None:
    async with nodes(free_port()) as (a, b):
        name = unique_name("events")
        stage = a.spawn(ProducerStage(), name=name)
        async with pipeline(b, [(name, a.name.name, {"max_demand": 100})]) as (front, _, _):
            await eventually_async(lambda: stage.subscribers)
            taking = Sampler(front, b).snapshot["erlang"]["subscriptions"]["rows"]
            assert [(row["direction"], row["node"], row["demand"]) for row in taking] == [
                ("in", a.name.name, 100)]
            watched = Raises(producer={"module": (Producer, {})},
                             processors={"default": {}})
            async with watched:
                giving = Sampler(watched, a).snapshot["erlang"]["subscriptions"]["rows"]
            assert [(row["direction"], row["stage"], row["node"], row["demand"])
                    for row in giving] == [("out", name, b.name.name, 100)]
