"""The library's last version in pull mode: requests are ``:pull_message`` and answered with
``{:send_message, data}``, which must count as the answer (not as a push that leaves the
request outstanding until ``pull_interval`` asks again)."""

from __future__ import annotations

from typing import Any

from pybroadway.erldist import GenServer, Node
from pybroadway.erldist.genserver import From
from pybroadway.otp_distribution import DEFAULT_NAME, Client
from pybroadway.term import Atom
from pybroadway.term.atoms import GEN_CAST, OK
from testkit.peers import SystemEpmd, unique_name
from testkit.wait import eventually_async
from tests.otp_distribution.helpers import COOKIE, elixir_peer, receiver_ref, server


async def test_elixir_client_of_the_last_version_in_pull_mode(epmd: SystemEpmd) -> None:
    # A re-ask timer far away: only answers counted as answers keep the data flowing.
    async with server(epmd.port, mode="pull", request_atom="pull_message",
                      pull_interval=600) as (node, _pipeline, collector, producer):
        peer = await elixir_peer(epmd.port, node)
        with peer:
            await peer.aeval(f"PbClient.start({receiver_ref(node)}, :last)")
            await collector.wait_for(5000, timeout=30)
            assert [n for (_label, n) in collector.data[:5000]] == list(range(1, 5001))
            assert len(producer.receiver.outstanding) <= producer.pending_demand


class FakeReceiver(GenServer):
    """Registers clients, sends each a pull request of a given version, records answers."""

    def __init__(self, request: Atom) -> None:
        super().__init__()
        self.request = request
        self.answers: list[Any] = []

    def handle_call(self, request: Any, from_: From) -> Any:
        self.send(from_.pid, (GEN_CAST, self.request))
        return OK

    def handle_cast(self, request: Any) -> None:
        self.answers.append(request)


async def test_python_client_answers_in_the_requests_version(epmd: SystemEpmd) -> None:
    async with Node(f"{unique_name('srv')}@localhost", cookie=COOKIE,
                    epmd_port=epmd.port) as server_node, \
            Node(f"{unique_name('cli')}@localhost", cookie=COOKIE,
                 epmd_port=epmd.port) as client_node:
        for request, answer in (("request_message", "respond_to_pull_request"),
                                ("pull_message", "send_message")):
            fake = server_node.spawn(FakeReceiver(Atom(request)), name=DEFAULT_NAME)
            client = await Client.start(client_node, receiver=(DEFAULT_NAME,
                                                               server_node.name.name),
                                        on_request=lambda: b"I'm alive!")
            await eventually_async(lambda fake=fake: fake.answers)
            assert fake.answers == [(Atom(answer), b"I'm alive!")]
            client.exit()
            fake.exit()
            await fake.wait()
