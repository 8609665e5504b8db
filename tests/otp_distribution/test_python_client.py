"""The Python client against the Python server, push and pull, and the overflow policies."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from pybroadway.erldist import Node
from pybroadway.otp_distribution import DEFAULT_NAME, Client
from pybroadway.pipeline import Message
from pybroadway.term import Atom
from pybroadway.term.atoms import GEN_CAST
from testkit.peers import SystemEpmd, unique_name
from testkit.wait import eventually_async
from tests.otp_distribution.helpers import COOKIE, server


def _client_node(epmd: SystemEpmd) -> Node:
    return Node(f"{unique_name('pyc')}@localhost", cookie=COOKIE, epmd_port=epmd.port)


async def test_python_client_pushes(epmd: SystemEpmd) -> None:
    async with server(epmd.port) as (node, _pipeline, collector, producer), \
            _client_node(epmd) as client_node:
        client = await Client.start(client_node, receiver=(DEFAULT_NAME, node.name.name))
        for i in range(1000):
            client.push_message(i)
        await collector.wait_for(1000, timeout=20)
        assert collector.data == list(range(1000))
        assert list(producer.receiver.clients) == [client.pid]


async def test_python_client_answers_pulls(epmd: SystemEpmd) -> None:
    counter = itertools.count(1)
    async with server(epmd.port, mode="pull") as (node, _pipeline, collector, _producer), \
            _client_node(epmd) as client_node:
        await Client.start(client_node, receiver=(DEFAULT_NAME, node.name.name),
                           on_request=lambda: next(counter))
        await collector.wait_for(300, timeout=20)
        assert collector.data[:300] == list(range(1, 301))


async def test_pull_mode_logs_the_data_not_each_request_at_info(
        epmd: SystemEpmd, caplog: pytest.LogCaptureFixture) -> None:
    """``serve --mode pull`` logs its messages at INFO: one line per answer (as per push),
    while the requests, which say nothing about the data, are DEBUG lines."""
    counter = itertools.count(1)
    with caplog.at_level(logging.INFO, logger="pybroadway.otp_distribution"):
        async with server(epmd.port, mode="pull", message_log_level=logging.INFO) as (
                node, _pipeline, collector, _producer), _client_node(epmd) as client_node:
            await Client.start(client_node, receiver=(DEFAULT_NAME, node.name.name),
                               on_request=lambda: next(counter))
            await collector.wait_for(50, timeout=20)
    info = [record.getMessage() for record in caplog.records
            if record.levelno == logging.INFO and record.name.startswith(
                "pybroadway.otp_distribution")]
    answers = [line for line in info if line.startswith("respond_to_pull_request: ")]
    assert len(answers) >= 50
    assert not [line for line in info if line.startswith(("request_message:", "pull_messages:"))]


async def test_python_client_reconnects_after_receiver_restart(epmd: SystemEpmd) -> None:
    async with server(epmd.port) as (node, _pipeline, collector, producer), \
            _client_node(epmd) as client_node:
        client = await Client.start(client_node, receiver=(DEFAULT_NAME, node.name.name),
                                    backoff=0.05)
        receiver = producer.receiver
        node.exit(receiver.pid, Atom("kill"))  # it crashes
        await receiver.wait()
        assert not client.is_connected or client.receiver is not None
        # the node's supervisor restarts it under the same name; the client registers again
        await eventually_async(lambda: producer.receiver is not receiver
                               and producer.receiver.clients)
        fresh = producer.receiver
        assert node.whereis(DEFAULT_NAME) == fresh.pid
        assert list(fresh.clients) == [client.pid]
        await client.connected(timeout=5)
        client.push_message("again")
        await collector.wait_for(1, timeout=5)
        assert collector.data == [b"again"]


async def test_drop_newest_counts_what_it_drops(epmd: SystemEpmd) -> None:
    gate = asyncio.Event()
    handled: list[int] = []

    async def slow(processor: str, message: Message, context: object) -> Message:
        await gate.wait()
        handled.append(message.data)
        return message

    async with server(epmd.port, handle=slow, overflow="drop_newest", buffer_size=50) \
            as (node, _pipeline, _collector, producer), _client_node(epmd) as client_node:
        client = await Client.start(client_node, receiver=(DEFAULT_NAME, node.name.name))
        for i in range(1000):
            client.push_message(i)
        await eventually_async(lambda: producer.dropped + producer.buffered >= 900)
        gate.set()
        assert producer.dropped > 0
        await eventually_async(lambda: len(handled) + producer.dropped == 1000)
        assert len(handled) + producer.dropped == 1000
        assert handled == sorted(handled)


async def test_casts_the_client_does_not_know_are_logged_a_few_lines_a_second(
        epmd: SystemEpmd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pybroadway.otp_distribution")
    asked = asyncio.Event()
    async with server(epmd.port) as (node, _pipeline, _collector, _producer), \
            _client_node(epmd) as client_node:
        client = await Client.start(client_node, receiver=(DEFAULT_NAME, node.name.name),
                                    on_request=asked.set)
        for i in range(300):
            node.send(client.pid, (GEN_CAST, (Atom("junk"), i)))
        # Handled after every junk cast before it (same sender, same order).
        node.send(client.pid, (GEN_CAST, Atom("request_message")))
        await asyncio.wait_for(asked.wait(), 10)
    lines = [r.getMessage() for r in caplog.records if "unknown cast" in r.getMessage()]
    assert 1 <= len(lines) <= 5, lines
