"""The sender a SEND_SENDER or REG_SEND names reaches a process only if it is a process of the
node whose connection the message came on: a peer cannot speak for another node's process
(the message itself is delivered, as the BEAM delivers it)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pybroadway.erldist import Process
from pybroadway.term import Atom, Pid
from testkit.peers import SystemEpmd
from tests.erldist.nodekit import WAIT, python_node

pytestmark = pytest.mark.timeout(60)


class Recorder(Process):
    """Records each message with the sender the node passed for it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: asyncio.Queue[tuple[Pid | None, Any]] = asyncio.Queue()

    def deliver_from(self, sender: Pid | None, message: Any) -> None:
        self.seen.put_nowait((sender, message))


async def test_only_a_process_of_the_sending_node_is_passed_as_sender(epmd: SystemEpmd
                                                                       ) -> None:
    async with python_node(epmd.port) as receiver, python_node(epmd.port) as peer:
        recorder = Recorder()
        receiver.spawn(recorder, name="recorder")
        assert await peer.connect(receiver.name)
        own = peer.spawn(Process()).pid
        by_name = ("recorder", receiver.name.name)
        forged = {b"a third node's": Pid(Atom("third@elsewhere"), 7, 0, 1),
                  b"the receiver's own": recorder.pid}
        peer.send(recorder.pid, b"own, by pid", sender=own)  # SEND_SENDER
        peer.send(by_name, b"own, by name", sender=own)  # REG_SEND
        for whose, pid in forged.items():
            peer.send(recorder.pid, b"%s, by pid" % whose, sender=pid)
            peer.send(by_name, b"%s, by name" % whose, sender=pid)
        peer.send(recorder.pid, b"none")  # SEND
        seen = [await asyncio.wait_for(recorder.seen.get(), WAIT) for _ in range(7)]
    assert seen == [(own, b"own, by pid"), (own, b"own, by name"),
                    (None, b"a third node's, by pid"), (None, b"a third node's, by name"),
                    (None, b"the receiver's own, by pid"),
                    (None, b"the receiver's own, by name"), (None, b"none")]


async def test_a_run_of_like_sends_carries_the_sender_the_connection_proves(
        epmd: SystemEpmd) -> None:
    """Sends that repeat one control arrive a run at a time: each still gets its sender, or
    None when the control names a process of another node."""
    async with python_node(epmd.port) as receiver, python_node(epmd.port) as peer:
        recorder = Recorder()
        receiver.spawn(recorder, name="recorder")
        assert await peer.connect(receiver.name)
        own = peer.spawn(Process()).pid
        forged = Pid(Atom("third@elsewhere"), 7, 0, 1)
        expected: list[tuple[Pid | None, Any]] = []
        for sender, seen_as in ((own, own), (forged, None), (own, own)):
            for target in (recorder.pid, ("recorder", receiver.name.name)):
                for i in range(300):  # sent in one turn of the loop: one write, read in runs
                    peer.send(target, i, sender=sender)
                    expected.append((seen_as, i))
        seen = [await asyncio.wait_for(recorder.seen.get(), WAIT) for _ in expected]
    assert seen == expected
