"""A process's mailbox taken from by several tasks of the process at once, as ``global``'s
locker does (a lock attempt's calls wait for their replies while a release's del_lock calls
wait for theirs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pybroadway.erldist import Node
from testkit.peers import free_port
from tests.erldist.nodekit import WAIT, Mailbox, python_node


def _is(expected: str) -> Callable[[Any], bool]:
    return lambda message: message == expected


async def _receive_with(node: Node, first: str, then: str) -> tuple[str, str]:
    """The test task waits for ``first``; another task of the same process receives ``then``,
    which is in the mailbox already, and ``first`` is delivered after it. What each got."""
    box = node.spawn(Mailbox())
    node.send(box.pid, then)
    other = asyncio.ensure_future(box.receive(_is(then)))
    # Runs after the other task's first step (the loop runs ready callbacks in order): the
    # test task is waiting by then, having looked at ``then`` already.
    asyncio.get_running_loop().call_soon(node.send, box.pid, first)
    mine = await box.receive(_is(first), timeout=WAIT)
    return mine, await asyncio.wait_for(other, WAIT)


async def test_a_receive_sees_a_message_after_another_task_took_one_it_had_looked_at() -> None:
    """A message that comes after another task took one this receive had looked at is found
    (the receive went on from where it had looked before, past the new one)."""
    async with python_node(free_port()) as node:
        assert await _receive_with(node, "mine", "his") == ("mine", "his")


async def test_two_tasks_waiting_on_one_process_each_get_their_message() -> None:
    """Two tasks wait at once, each for its own message: each is woken for it (the second
    receive to wait took the first's wake-up, and the first waited forever)."""
    async with python_node(free_port()) as node:
        box = node.spawn(Mailbox())
        first = asyncio.ensure_future(box.receive(_is("first")))
        second = asyncio.ensure_future(box.receive(_is("second")))
        loop = asyncio.get_running_loop()
        # after both tasks' first steps: both wait, the second having started last
        loop.call_soon(node.send, box.pid, "first")
        loop.call_soon(node.send, box.pid, "second")
        async with asyncio.timeout(WAIT):
            assert await asyncio.gather(first, second) == ["first", "second"]
