"""The Python Client against a ``pybroadway serve`` process (with its embedded EPMD) that is
killed and started again on the same ports: the client node dials it again, registers with its
EPMD again, looks the receiver up and registers with it, within a few seconds. No Erlang is
needed."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pybroadway.erldist import Node
from pybroadway.erldist.epmd import port_please
from pybroadway.otp_distribution import DEFAULT_NAME, Client, ConnectError, QueueFull
from pybroadway.term import Atom
from testkit.peers import free_port, unique_name
from testkit.processes import WatchedProcess
from testkit.wait import eventually_async
from tests.otp_distribution.helpers import COOKIE as HELPERS_COOKIE
from tests.otp_distribution.helpers import server

ROOT = Path(__file__).resolve().parents[2]
COOKIE = "reconnect_cookie"
PUSHED = re.compile(r"\[INFO\] push_message: (\d+)$")
READY = " serves off_broadway_otp_distribution_receiver in push mode"


class Serve:
    """``python -m pybroadway serve`` on one EPMD port and node name, run again after it was
    killed; each run is a process of its own, its output read as it comes."""

    def __init__(self) -> None:
        self.epmd_port = free_port()
        self.sname = f"{unique_name('srv')}@localhost"
        self.proc: WatchedProcess | None = None

    def start(self) -> None:
        self.proc = WatchedProcess(
            [sys.executable, "-m", "pybroadway", "serve", "--cookie", COOKIE,
             "--sname", self.sname, "--epmd-port", str(self.epmd_port)], cwd=ROOT)

    def log(self) -> str:
        assert self.proc is not None
        return "\n".join(self.proc.stderr)

    async def ready(self) -> None:
        """Wait until this run serves the receiver (registered in :global)."""
        assert self.proc is not None
        await asyncio.to_thread(self.proc.wait_logged, READY)

    def pushed(self) -> list[int]:
        """The data of the push_message casts this run's receiver took, in order."""
        return [int(found.group(1)) for line in self.log().splitlines()
                if (found := PUSHED.search(line))]

    def kill(self) -> None:
        """SIGKILL, by pid: the node and its embedded EPMD vanish without a word."""
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> tuple[int, int, int]:
        """SIGTERM; the run's summary line ``handled N, failed F, dropped D``."""
        assert self.proc is not None
        assert self.proc.terminate() == 0, self.log()
        return self.proc.summary()


@pytest.fixture
def serve() -> Iterator[Serve]:
    server = Serve()
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def _start_client(node: Node, lookup: str, server: Serve, **options: Any) -> Client:
    """``global``: the README's way (connect, then :global); ``server``: :global after the
    client dialled ``server`` itself; ``name``: ``receiver=(name, node)``."""
    if lookup == "global":
        assert await node.connect(server.sname)
        return await Client.start(node, **options)
    if lookup == "server":
        return await Client.start(node, server=server.sname, **options)
    return await Client.start(node, receiver=(DEFAULT_NAME, server.sname), **options)


@pytest.mark.parametrize("lookup", ["global", "server", "name"])
async def test_client_comes_back_after_the_server_restarts(serve: Serve, lookup: str) -> None:
    await serve.ready()
    async with Node(f"{unique_name('pyc')}@localhost", cookie=COOKIE,
                    epmd_port=serve.epmd_port) as node:
        client = await _start_client(node, lookup, serve, max_queue=15)
        for i in range(10):
            client.push_message(i)
        await eventually_async(lambda: serve.pushed() == list(range(10)))

        # a push at the very moment the connection is lost, before the client has seen its
        # receiver's DOWN: queued too, not sent into the void
        unwatch = node.monitor_nodes(
            lambda down, up: None if up else client.push_message(10))
        serve.kill()
        await eventually_async(lambda: not client.is_connected)
        unwatch()
        assert client.queued == 1
        # while the server is away, pushes wait in the client's queue, up to max_queue
        for i in range(11, 25):
            client.push_message(i)
        assert client.queued == 15
        with pytest.raises(QueueFull, match="max_queue=15"):
            client.push_message(25)
        assert client.queued == 15

        serve.start()
        await serve.ready()
        restarted = time.monotonic()
        await client.connected(timeout=5)
        assert time.monotonic() - restarted < 5
        assert client.queued == 0  # sent as it registered, before any new push
        # the client node is registered with the new EPMD again (its keeper saw it return)
        alive = node.name.name.split("@")[0]
        await eventually_async(lambda: port_please(alive, epmd_port=serve.epmd_port),
                               timeout=5)
        for i in range(25, 30):
            client.push_message(i)
        await eventually_async(lambda: len(serve.pushed()) >= 20)
        assert serve.pushed() == list(range(10, 30))
    assert serve.stop() == (20, 0, 0)


async def test_after_a_long_outage_the_client_is_back_within_seconds(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """The backoff is capped low: after an 8 s outage the client does not sleep on for long
    once the server is back; and it says once why it cannot reach the server, not at each of
    its attempts."""
    caplog.set_level(logging.INFO)
    await serve.ready()
    async with Node(f"{unique_name('pyc')}@localhost", cookie=COOKIE,
                    epmd_port=serve.epmd_port) as node:
        client = await Client.start(node, receiver=(DEFAULT_NAME, serve.sname))
        serve.kill()
        await eventually_async(lambda: not client.is_connected)
        await asyncio.sleep(8)  # the outage itself, not a wait for anything
        serve.start()
        await serve.ready()
        restarted = time.monotonic()
        await client.connected(timeout=5)
        assert time.monotonic() - restarted < 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    unreachable = [line for line in warnings if serve.sname in line
                   and ("could not connect" in line or "cannot reach" in line)]
    assert len(unreachable) == 1, warnings


# -- against a server node in this process (its embedded EPMD on a free port) -----------------


def _client_node(epmd_port: int) -> Node:
    return Node(f"{unique_name('pyc')}@localhost", cookie=HELPERS_COOKIE, epmd_port=epmd_port)


async def test_pushes_while_the_receiver_restarts_wait_and_go_in_order() -> None:
    """The receiver alone crashes and its supervisor restarts it; pushes made meanwhile are
    queued and sent once the client registered with the new one, before later pushes."""
    port = free_port()
    async with server(port) as (node, _pipeline, collector, producer), \
            _client_node(port) as client_node:
        client = await Client.start(client_node, receiver=(DEFAULT_NAME, node.name.name),
                                    backoff=1.0)
        client.push_message(0)
        await collector.wait_for(1, timeout=5)
        receiver = producer.receiver
        node.exit(receiver.pid, Atom("kill"))
        await eventually_async(lambda: not client.is_connected)
        for i in range(1, 101):  # the client waits its 1 s backoff before trying again
            client.push_message(i)
        assert client.queued == 100
        await client.connected(timeout=5)
        assert producer.receiver is not receiver
        assert client.queued == 0
        client.push_message(101)
        await collector.wait_for(102, timeout=5)
        assert collector.data == list(range(102))


async def test_pushes_before_the_first_registration_wait_for_it() -> None:
    port = free_port()
    async with server(port) as (node, _pipeline, collector, _producer), \
            _client_node(port) as client_node:
        client = Client(receiver=(DEFAULT_NAME, node.name.name))
        client.push_message("early")  # not even spawned yet
        client_node.spawn(client)
        client.push_message("still early")
        assert client.queued == 2
        await client.connected(timeout=5)
        client.push_message("on time")
        await collector.wait_for(3, timeout=5)
        assert collector.data == [b"early", b"still early", b"on time"]


async def test_a_stopped_client_refuses_pushes() -> None:
    """A client whose first connection failed has stopped: its pushes raise ConnectError
    (not QueueFull), as they do once its node stopped."""
    port = free_port()
    async with server(port) as (node, _pipeline, _collector, _producer):
        async with _client_node(port) as client_node:
            lost = Client(receiver=("nobody_here", node.name.name))
            client_node.spawn(lost)
            lost.push_message("queued, then never sent")
            with pytest.raises(ConnectError, match="noproc"):
                await lost.connected(timeout=5)
            with pytest.raises(ConnectError, match="stopped") as raised:
                lost.push_message("too late")
            assert not isinstance(raised.value, QueueFull)
            client = await Client.start(client_node, receiver=(DEFAULT_NAME, node.name.name))
        with pytest.raises(ConnectError, match="stopped"):
            client.push_message("after the node stopped")
