"""``Client.start`` returns once the client registered, even when the receiver goes down at
once after answering (a server stopped just then): the client is started and reconnecting,
not "did not connect in time"."""

from __future__ import annotations

from typing import Any

from pybroadway.erldist import Exit, From, GenServer, Node
from pybroadway.otp_distribution import Client
from pybroadway.term import Atom
from pybroadway.term.atoms import OK
from testkit.peers import SystemEpmd, unique_name
from tests.otp_distribution.helpers import COOKIE


class AnswersThenStops(GenServer):
    """Answers ``:register``, then stops before the client can look at anything else."""

    def handle_call(self, request: Any, from_: From) -> Any:
        self.reply(from_, OK)
        raise Exit(Atom("shutdown"))


async def test_start_returns_when_the_receiver_stops_right_after_registering(
        epmd: SystemEpmd) -> None:
    async with Node(f"{unique_name('race')}@localhost", cookie=COOKIE,
                    epmd_port=epmd.port) as node:
        receiver = node.spawn(AnswersThenStops(), name="answers_then_stops")
        client = await Client.start(node, receiver=receiver.pid, backoff=60.0)
        assert client.alive and not client.is_connected  # it went down: reconnecting
