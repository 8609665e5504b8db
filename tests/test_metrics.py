"""Prometheus metrics: the /metrics text of a running pipeline, and a real Prometheus server
scraping ``pybroadway serve --metrics-port`` while a Python client pushes to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tracemalloc
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pybroadway.erldist import Node
from pybroadway.metrics import METRICS, HttpLimits, Metrics, start_metrics_server
from pybroadway.otp_distribution import Client
from pybroadway.pipeline import BatchInfo, Message, Pipeline, Producer
from testkit.pages import page, section
from testkit.peers import free_port, require, unique_name, wait_for_port
from testkit.wait import eventually_async
from tests.otp_distribution.helpers import COOKIE, server

ROOT = Path(__file__).resolve().parents[1]


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    """``GET url``: status, content type and body (blocking; call it in a thread)."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and label set."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /,
          **labels: str) -> float:
    return found[(metric, frozenset(labels.items()))]


async def test_metrics_text_of_a_running_connector() -> None:
    port = free_port()
    async with server(port, concurrency=2) as (node, pipeline, collector, _producer), \
            Node(f"{unique_name('pyc')}@localhost", cookie=COOKIE, epmd_port=port) as other:
        metrics = await start_metrics_server(pipeline, node, port=0)
        async with metrics:
            assert await other.connect(node.name)
            client = await Client.start(other)
            for i in range(300):
                client.push_message(i)
            await collector.wait_for(300, timeout=20)
            status, content_type, text = await asyncio.to_thread(get, metrics.url)
            assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
            found = samples(text)
            pipe = {"pipeline": pipeline.options["name"]}
            assert value(found, "pybroadway_messages_handled_total", **pipe) == 300
            assert value(found, "pybroadway_messages_failed_total", **pipe) == 0
            assert value(found, "pybroadway_messages_in_flight", **pipe) == 0
            assert value(found, "pybroadway_registered_clients", **pipe) == 1
            assert value(found, "pybroadway_client_messages_total", **pipe,
                         client_node=other.name.name) == 300
            assert value(found, "pybroadway_connected_nodes") == 1
            for stage, name in (("producer", "0"), ("processor", "default")):
                labels = {**pipe, "stage": stage, "name": name}
                assert value(found, "pybroadway_stage_messages_in_total", **labels) == 300
                assert value(found, "pybroadway_stage_messages_out_total", **labels) == 300
                assert value(found, "pybroadway_stage_queued_messages", **labels) == 0
            # two processors, each asking for max_demand (10) it has not received
            assert value(found, "pybroadway_stage_outstanding_demand", **pipe,
                         stage="processor", name="default") == 20
            assert value(found, "process_resident_memory_bytes") > 0
            assert {name for name, _ in found} >= {
                name for name in METRICS if not name.startswith(("pybroadway_batch",
                                                                  "pybroadway_worker"))}
            # OpenMetrics when asked for; anything but /metrics is not found
            status, content_type, text = await asyncio.to_thread(
                get, metrics.url, "application/openmetrics-text; version=1.0.0")
            assert content_type.startswith("application/openmetrics-text")
            assert text.endswith("# EOF\n")
            status, _, _ = await asyncio.to_thread(get, metrics.url.replace("/metrics", "/x"))
            assert status == 404
        # stopped: the port is closed
        with pytest.raises(OSError):
            await asyncio.to_thread(get, metrics.url)


class Batching(Pipeline):
    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        return message

    def handle_batch(self, batcher: Any, messages: list[Message], info: BatchInfo,
                     context: Any) -> list[Message]:
        if any(message.data == 7 for message in messages):
            raise ValueError("seven")
        return messages


async def test_batch_sizes_and_durations_without_a_node() -> None:
    pipeline = Batching(producer={"module": (Producer, {"buffer_size": None})},
                        processors={"default": {"concurrency": 1}}, name="Batched",
                        batchers={"default": {"batch_size": 4, "batch_timeout": 10}})
    metrics = Metrics(pipeline)
    try:
        async with pipeline:
            pipeline.push_messages([Message(i) for i in range(10)])
            await eventually_async(lambda: sum(pipeline.stats()[k]
                                               for k in ("handled", "failed")) == 10)
            body, _ = metrics.exposition()
    finally:
        metrics.close()
    found = samples(body.decode())
    pipe = {"pipeline": "Batched"}
    # batches of 4, 4 and 2 (on the timeout); the second, holding 7, fails whole
    assert value(found, "pybroadway_batch_size_messages_count", **pipe, batcher="default") == 3
    assert value(found, "pybroadway_batch_size_messages_sum", **pipe, batcher="default") == 10
    assert value(found, "pybroadway_batch_size_messages_bucket", **pipe, batcher="default",
                 le="2.0") == 1
    assert value(found, "pybroadway_batch_duration_seconds_count", **pipe,
                 batcher="default") == 3
    labels = {**pipe, "stage": "batcher", "name": "default"}
    assert value(found, "pybroadway_stage_messages_in_total", **labels) == 10
    assert value(found, "pybroadway_stage_messages_out_total", **labels) == 6
    assert value(found, "pybroadway_stage_messages_failed_total", **labels) == 4
    assert value(found, "pybroadway_messages_failed_total", **pipe) == 4
    assert "pybroadway_connected_nodes" not in {name for name, _ in found}


async def test_client_nodes_beyond_the_cap_add_up_under_other() -> None:
    port = free_port()
    async with server(port) as (node, pipeline, collector, _producer), \
            Node(f"{unique_name('pyc')}@localhost", cookie=COOKIE, epmd_port=port) as other:
        metrics = Metrics(pipeline, node, max_client_nodes=0)
        try:
            assert await other.connect(node.name)
            client = await Client.start(other)
            for i in range(5):
                client.push_message(i)
            await collector.wait_for(5, timeout=20)
            found = samples(metrics.exposition()[0].decode())
        finally:
            metrics.close()
    clients = {labels: v for (name, labels), v in found.items()
               if name == "pybroadway_client_messages_total"}
    assert clients == {frozenset({("pipeline", pipeline.options["name"]),
                                  ("client_node", "other")}): 5}


def stalled_connections(port: int, count: int, header: bytes) -> list[socket.socket]:
    """``count`` connections that each send a request line and ``header``, then stall."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sockets.append(sock)
        with contextlib.suppress(OSError):  # the server may already have dropped it
            sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + header)
        sock.setblocking(False)
    return sockets


def held(sock: socket.socket) -> bool:
    """Whether the server still holds the connection: it neither answered nor closed it."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


async def test_stalled_connections_with_big_headers_hold_at_most_the_cap() -> None:
    pipeline = Pipeline(producer={"module": (Producer, {})}, name="Attacked",
                        handle_message=lambda _processor, message, _context: message,
                        processors={"default": {"concurrency": 1}})
    limits = HttpLimits()
    cap = limits.max_connections
    async with pipeline, await start_metrics_server(pipeline, port=0) as server:
        tracemalloc.start()  # from here on, what the server (and the attack) allocate
        attack = await asyncio.to_thread(stalled_connections, server.port, 3 * cap,
                                         b"a" * 15_000)
        try:
            # the newest stay (until their timeout), the older were dropped to make room
            await eventually_async(lambda: sum(map(held, attack)) == cap, timeout=5)
            assert server.http.connections == cap
            assert server.http.buffered <= cap * limits.max_header_bytes
            # a scrape gets through meanwhile
            code, _, body = await asyncio.to_thread(get, server.url)
            assert code == 200 and "pybroadway_messages_handled_total" in body
            # headers beyond the limit (1 MB in lines of 60 KB) are refused, not read on
            more = await asyncio.to_thread(stalled_connections, server.port, cap,
                                           (b"a" * 60_000 + b"\r\nX-More: ") * 16)
            attack += more
            await eventually_async(lambda: not any(map(held, more)), timeout=5)
            assert server.http.buffered <= cap * limits.max_header_bytes
            # at its worst (a few reads of 256 KiB in flight, the scrape), far from a megabyte
            # per connection (the unbounded server peaked at 34 MB here)
            assert tracemalloc.get_traced_memory()[1] < 16 << 20
        finally:
            tracemalloc.stop()
            for sock in attack:
                sock.close()
        await eventually_async(lambda: server.http.connections == 0)
        assert server.http.buffered == 0
        code, _, body = await asyncio.to_thread(get, server.url)
        assert code == 200 and "pybroadway_messages_handled_total" in body


@pytest.mark.parametrize("where", ["the clone", "elsewhere"])
def test_serve_metrics_port_without_prometheus_client_is_one_line(where: str,
                                                                  tmp_path: Path) -> None:
    """It says the pip command that works from there (the package is on no registry)."""
    # prometheus_client cannot be imported; pybroadway and serve without the flag do not need it
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "import pybroadway, pybroadway.cli, pybroadway.otp_distribution\n"
            "assert 'pybroadway.metrics' not in sys.modules\n"
            "sys.exit(pybroadway.cli.main(sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", code, "serve", "--metrics-port", "9999"],
                         cwd=ROOT if where == "the clone" else tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1, out.stderr
    assert out.stderr.splitlines() == [
        "pybroadway serve: --metrics-port needs prometheus_client: "
        + ("pip install '.[metrics]'" if where == "the clone"
           else f"pip install '{ROOT}[metrics]'")]


# -- a real Prometheus ---------------------------------------------------------------------

@contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess writing to ``log``, stopped (by its pid) when the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def query(prometheus_port: int, expression: str) -> list[dict[str, Any]]:
    """Prometheus's answer to an instant query: its result vector."""
    url = (f"http://127.0.0.1:{prometheus_port}/api/v1/query?"
           + urllib.parse.urlencode({"query": expression}))
    status, _, body = get(url)
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "success", body
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def scalar(prometheus_port: int, expression: str) -> float | None:
    """The value of a one-element query result, None while there is none."""
    result = query(prometheus_port, expression)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def readme_scrape_config() -> str:
    """The operations guide's ``prometheus.yml`` snippet."""
    blocks = re.findall(r"```yaml\n(.*?)```", page("operations"), re.S)
    found = [block for block in blocks if "scrape_configs:" in block]
    assert len(found) == 1, "the operations guide shows one scrape_configs"
    return found[0]


async def test_prometheus_scrapes_serve(tmp_path: Path) -> None:
    prometheus = require("Prometheus (Debian package prometheus)", "prometheus")
    epmd_port, metrics_port, prometheus_port = free_port(), free_port(), free_port()
    sname = f"{unique_name('metrics')}@localhost"
    config = tmp_path / "prometheus.yml"
    # The guide's scrape_configs, as written, with this test's port and a faster scrape.
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                      + readme_scrape_config().replace("9568", str(metrics_port)))
    serve_argv = [sys.executable, "-m", "pybroadway", "serve", "--sname", sname,
                  "--cookie", COOKIE, "--epmd-port", str(epmd_port), "--quiet",
                  "--metrics-port", str(metrics_port)]
    prometheus_argv = [prometheus, f"--config.file={config}",
                       f"--storage.tsdb.path={tmp_path / 'data'}",
                       f"--web.listen-address=127.0.0.1:{prometheus_port}"]
    serve_log, prometheus_log = tmp_path / "serve.log", tmp_path / "prometheus.log"

    def logs() -> str:
        return (f"serve:\n{serve_log.read_text()[-3000:]}\n"
                f"prometheus:\n{prometheus_log.read_text()[-3000:]}")

    with process(serve_argv, serve_log) as serving, \
            process(prometheus_argv, prometheus_log):
        await asyncio.to_thread(wait_for_port, metrics_port, 20)
        assert f"metrics at http://127.0.0.1:{metrics_port}/metrics" in serve_log.read_text()
        async with Node(f"{unique_name('pyc')}@localhost", cookie=COOKIE,
                        epmd_port=epmd_port) as node:
            assert await node.connect(sname)
            client = await Client.start(node)
            for i in range(250):
                client.push_message(i)

            async def scraped(expression: str, expected: float) -> bool:
                return await asyncio.to_thread(scalar, prometheus_port, expression) == expected

            await eventually_async(
                lambda: scraped("pybroadway_messages_handled_total", 250), timeout=60,
                interval=0.5, what=lambda: "Prometheus saw 250 handled\n" + logs())
            assert await scraped("pybroadway_registered_clients", 1)
            assert await scraped("pybroadway_connected_nodes", 1)
            assert await scraped(
                f'pybroadway_client_messages_total{{client_node="{node.name.name}"}}', 250)
            assert await scraped('pybroadway_stage_messages_out_total{stage="processor"}', 250)
            assert await scraped('up{job="pybroadway"}', 1)
        # the client's node is gone: no registered client is left
        await eventually_async(lambda: scraped("pybroadway_registered_clients", 0),
                               timeout=30, interval=0.5, what=logs)
        serving.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(serving.wait, 30) == 0, logs()
    assert serve_log.read_text().splitlines()[-1] == "handled 250, failed 0, dropped 0"


def test_the_operations_guide_lists_every_metric() -> None:
    metrics = section(page("operations"), "Metrics")
    assert [name for name in METRICS if f"`{name}`" not in metrics] == []
