"""The connection's shortcuts on the receive path give exactly what a full decode gives."""

from __future__ import annotations

from typing import Any

from pybroadway.erldist import Process
from pybroadway.term import Atom
from testkit.peers import BeamPeer, SystemEpmd
from tests.erldist.nodekit import WAIT, atom, python_node, started


class Collector(Process):
    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.got: list[Any] = []

    async def run(self) -> None:
        for _ in range(self.count):
            self.got.append(await self.receive(timeout=WAIT))


# Sent in this order by one BEAM process: repeated controls, messages that differ only in a
# trailing binary, and messages that share that prefix but not that shape.
MESSAGES = [
    "{'$gen_cast', {push_message, <<\"a\">>}}",
    "{'$gen_cast', {push_message, <<\"How are you?\">>}}",
    "{'$gen_cast', {push_message, <<>>}}",
    "{'$gen_cast', {push_message, binary:copy(<<\"x\">>, 70000)}}",
    "{'$gen_cast', {push_message, [<<\"not\">>, <<\"a binary\">>]}}",
    "{'$gen_cast', {push_message, <<\"b\">>}}",
    "{'$gen_cast', {push_message, <<\"c\">>, extra}}",
    "{'$gen_cast', {push_message, <<1, 2:3>>}}",
    "{m, <<\"d\">>}",
    "{m, <<\"e\">>}",
    "{'$gen_cast', {push_message, <<\"f\">>}}",
]
EXPECTED: list[Any] = [
    (Atom("$gen_cast"), (Atom("push_message"), b"a")),
    (Atom("$gen_cast"), (Atom("push_message"), b"How are you?")),
    (Atom("$gen_cast"), (Atom("push_message"), b"")),
    (Atom("$gen_cast"), (Atom("push_message"), b"x" * 70000)),
    (Atom("$gen_cast"), (Atom("push_message"), [b"not", b"a binary"])),
    (Atom("$gen_cast"), (Atom("push_message"), b"b")),
    (Atom("$gen_cast"), (Atom("push_message"), b"c", Atom("extra"))),
    None,  # a bit string: checked by type below
    (Atom("m"), b"d"),
    (Atom("m"), b"e"),
    (Atom("$gen_cast"), (Atom("push_message"), b"f")),
]


async def test_repeated_controls_and_trailing_binaries(epmd: SystemEpmd, otp: str) -> None:
    async with python_node(epmd.port) as node, \
            started(BeamPeer.erlang(otp, epmd_port=epmd.port)) as peer:
        collector = node.spawn(Collector(len(MESSAGES)), name="collector")
        sends = ", ".join(f"{{collector, {atom(node)}}} ! {m}" for m in MESSAGES)
        await peer.aeval(sends)
        assert await collector.wait() == Atom("normal")
        for got, expected in zip(collector.got, EXPECTED, strict=True):
            if expected is None:
                assert type(got[1][1]).__name__ == "BitBinary"
            else:
                assert got == expected
