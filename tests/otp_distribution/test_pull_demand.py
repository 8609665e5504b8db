"""Pull mode never over-requests: the receiver keeps at most the unmet demand in flight.

A slow pipeline (each message takes a moment of simulated work) with a small ``max_demand`` is
fed by Elixir clients that answer every request at once. The receiver is watched at every
point where it sends requests or hands answers over: requests out (plus answers not yet handed
over) never exceed the producer's ``pending_demand``, the producer never has to buffer an
answer nobody asked for, and the requests the Elixir clients received, counted on their side,
are covered by the demand. The stream must not stall either: the re-ask timer is set far
beyond the test's bound, so only demand-driven requests can finish it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest

from pybroadway.erldist import Node
from pybroadway.otp_distribution import Client, OtpDistributionProducer, Receiver
from pybroadway.pipeline import Message, Pipeline
from pybroadway.term import Atom, decode
from testkit.peers import SystemEpmd, free_port, unique_name
from tests.otp_distribution.helpers import COOKIE, Collector, elixir_peer, receiver_ref

MESSAGES = 1000
REQUEST = Atom("request_message")


class DemandWatch:
    """Wraps a running receiver's request sending and flushing; records every breach."""

    def __init__(self, producer: OtpDistributionProducer) -> None:
        self.producer = producer
        self.receiver: Receiver = producer.receiver
        self.sent = 0
        self.demanded = 0
        self.checks = 0
        self.max_outstanding = 0
        self.breaches: list[str] = []
        receiver = self.receiver
        send_requests, flush, send = receiver._send_requests, receiver._flush, receiver.send
        handle_demand = producer.handle_demand

        def watched_send_requests() -> None:
            send_requests()
            self.check("after sending requests")

        def watched_flush() -> None:
            flush()
            self.check("after handing answers over")

        def counting_send(to: Any, message: Any) -> None:
            if type(message) is tuple and message[1] is REQUEST:
                self.sent += 1
            send(to, message)

        def counting_handle_demand(demand: int) -> None:
            self.demanded += demand
            handle_demand(demand)
            self.check(f"after handle_demand({demand})")

        receiver._send_requests = watched_send_requests  # type: ignore[method-assign]
        receiver._flush = watched_flush  # type: ignore[method-assign]
        receiver.send = counting_send  # type: ignore[method-assign]
        producer.handle_demand = counting_handle_demand  # type: ignore[method-assign]

    def check(self, where: str) -> None:
        self.checks += 1
        receiver, producer = self.receiver, self.producer
        in_flight = len(receiver.outstanding) + len(receiver._answers)
        self.max_outstanding = max(self.max_outstanding, len(receiver.outstanding))
        if in_flight > producer.pending_demand:
            self.breaches.append(f"{where}: {len(receiver.outstanding)} outstanding + "
                                 f"{len(receiver._answers)} unflushed answers > pending demand "
                                 f"{producer.pending_demand}")
        if producer.buffered:
            self.breaches.append(f"{where}: {producer.buffered} answers buffered, unasked for")
        if self.sent > self.demanded:
            self.breaches.append(f"{where}: {self.sent} requests sent for {self.demanded} "
                                 "demanded")


@pytest.mark.parametrize(("clients", "max_demand", "concurrency"),
                         [(1, 1, 1), (1, 3, 2), (3, 3, 2), (3, 5, 4)],
                         ids=lambda value: str(value))
async def test_pull_never_over_requests(epmd: SystemEpmd, clients: int, max_demand: int,
                                        concurrency: int) -> None:
    logging.getLogger("pybroadway.otp_distribution").setLevel(logging.INFO)
    collector = Collector()

    async def slow(processor: str, message: Message, context: Any) -> Message:
        await asyncio.sleep(0.0005)  # the work being simulated, not a synchronisation
        return collector.handle_message(processor, message, context)

    async with Node(f"{unique_name('py')}@localhost", cookie=COOKIE,
                    epmd_port=epmd.port) as node:
        pipeline = Pipeline(
            handle_message=slow,
            producer={"module": (OtpDistributionProducer, {
                "node": node, "mode": "pull", "pull_interval": 120.0})},
            processors={"default": {"concurrency": concurrency, "max_demand": max_demand}})
        async with pipeline:
            producer: OtpDistributionProducer = pipeline.producers[0]  # type: ignore[assignment]
            watch = DemandWatch(producer)
            peer = await elixir_peer(epmd.port, node)
            with peer:
                labels = ", ".join(f":c{i}" for i in range(clients))
                await peer.aeval(f"pids = for l <- [{labels}], do: "
                                 f"elem(PbClient.start({receiver_ref(node)}, l), 1)")
                await collector.wait_for(MESSAGES, timeout=30)
                received = decode(await peer.aeval(
                    "Enum.map(pids, fn pid -> :sys.get_state(pid).n end)"))
                # the Elixir side's count against the demand, at one consistent point
                stats = pipeline.stats()  # taken: in flight or done
                asked_for = (stats["in_flight"] + stats["handled"] + stats["failed"]
                             + producer.buffered + len(producer.receiver._answers)
                             + producer.pending_demand)
                assert sum(received) <= watch.sent
                assert sum(received) <= asked_for, (received, asked_for)
                assert watch.sent <= watch.demanded
                assert watch.breaches == [], watch.breaches[:5]
                assert watch.checks >= MESSAGES // (max_demand * concurrency)
                assert 0 < watch.max_outstanding <= max_demand * concurrency
                # every client was asked, in turn (once all had registered: the first one
                # registers alone, a moment before the others)
                assert len(Counter(label for label, _n in collector.data)) == clients
                counts = Counter(label for label, _n in collector.data[200:MESSAGES])
                assert len(counts) == clients
                assert max(counts.values()) - min(counts.values()) \
                    <= 2 * max_demand * concurrency, counts
        assert producer.dropped == 0


class _Answers:
    """A sink that records pull answers and keeps its demand where it is."""

    def __init__(self) -> None:
        self.data: list[Any] = []
        self.arrived = asyncio.Event()

    def pushed(self, data: list[Any], metadata: list[Any]) -> None:
        raise AssertionError("nothing is pushed in this test")

    def answered(self, data: list[Any], metadata: list[Any]) -> None:
        self.data += data
        self.arrived.set()


async def test_a_late_answer_does_not_retire_another_clients_request() -> None:
    """A request unanswered for pull_interval is asked again of the next client. When the
    first client's answer then arrives late, it must not retire the second client's request
    (which is still out): that would make room for a request the demand never asked for."""
    async with Node(f"{unique_name('py')}@localhost", cookie=COOKIE,
                    epmd_port=free_port()) as node:  # an embedded EPMD
        sink = _Answers()
        receiver = node.spawn(Receiver(sink, name="late_test", pull_interval=0.2))
        asked = {"a": asyncio.Event(), "b": asyncio.Event()}
        gates = {"a": asyncio.Event(), "b": asyncio.Event()}

        def answerer(name: str) -> Any:
            async def answer() -> str:
                asked[name].set()
                await gates[name].wait()
                return name
            return answer

        client_a = await Client.start(node, receiver=receiver.pid, on_request=answerer("a"))
        client_b = await Client.start(node, receiver=receiver.pid, on_request=answerer("b"))
        receiver.want(1)
        await asyncio.wait_for(asked["a"].wait(), 5)  # the request went to a
        await asyncio.wait_for(asked["b"].wait(), 5)  # unanswered: asked again of b
        assert [entry[1] for entry in receiver.outstanding] == [client_b.pid]
        gates["a"].set()  # a answers its old request now
        await asyncio.wait_for(sink.arrived.wait(), 5)
        assert sink.data == ["a"]
        # b's request is still out, and it still covers the demand: nothing more was asked
        assert [entry[1] for entry in receiver.outstanding] == [client_b.pid]
        gates["b"].set()
        receiver.want(0)
        assert client_a.alive and client_b.alive
