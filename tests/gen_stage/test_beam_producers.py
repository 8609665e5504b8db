"""The pipeline with BEAM GenStage stages: Erlang stand-in producers on OTP 25 and 28, over
plain TCP and over TLS (one that dies mid-stream and is restarted: the pipeline subscribes
again; nothing is handled twice within one subscription and no more arrives than was asked),
and the Elixir demo stages of examples/gen_stage_demo.ex both ways."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from pybroadway.erldist import Node
from pybroadway.gen_stage import GenStageProducer, expose, forward
from pybroadway.pipeline import Message, Pipeline
from pybroadway.term import Atom
from testkit.peers import BeamPeer, SystemEpmd, unique_name
from testkit.wait import eventually_async
from tests.erldist.nodekit import ev, python_node, started
from tests.gen_stage.helpers import pipeline

DEMO = Path(__file__).resolve().parents[2] / "examples" / "gen_stage_demo.ex"



async def test_a_producer_that_dies_mid_stream_is_subscribed_again(
        standin_pair_tcp_tls: tuple[Node, BeamPeer]) -> None:
    node, peer = standin_pair_tcp_tls
    name = unique_name("source")
    await ev(peer, f"P1 = pb_gen_stage:producer({name}, #{{label => first}})")
    async with pipeline(node, [(name, peer.node, {"max_demand": 200})]) as (
            _, handled, producer):
        await handled.wait(3000)
        await ev(peer, "exit(P1, kill)")
        await eventually_async(lambda: not producer.subscriber.subscriptions)
        before = len(handled.data)
        await ev(peer, f"P2 = pb_gen_stage:producer({name}, #{{label => second, "
                       f"limit => 1000}})")
        await handled.wait(before + 1000)
        asked_sent = await eventually_async(lambda: _asked_if_quiet(peer))
    first = [i for label, i in handled.data if label == Atom("first")]
    second = [i for label, i in handled.data if label == Atom("second")]
    # within each subscription: every event once, none missing up to the last (two
    # processors handle chunks side by side, so the order is per chunk)
    assert sorted(first) == list(range(1, len(first) + 1))
    assert sorted(second) == list(range(1, 1001))
    assert not [k for k, n in Counter(handled.data).items() if n > 1]
    asked, sent = asked_sent
    assert sent == 1000 and asked >= sent  # the second producer sent only what was asked


async def _asked_if_quiet(peer: BeamPeer) -> tuple[int, int] | None:
    stats = await ev(peer, "pb_gen_stage:stats(P2)")
    asked, sent = stats[Atom("asked")], stats[Atom("sent")]
    return (asked, sent) if sent == 1000 else None


async def test_elixir_demo_stages_both_ways(epmd: SystemEpmd) -> None:
    async with python_node(epmd.port) as node:
        peer = BeamPeer.elixir(epmd_port=epmd.port)
        async with started(peer):
            await ev(peer, f'Code.require_file("{DEMO}"); '
                           f'Node.connect(:"{node.name.name}")')
            await ev(peer, "{:ok, _} = DemoProducer.start_link(:events)")
            results = await expose(node, "results")

            async def handle_batch(batcher: object, messages: list[Message], info: object,
                                   context: object) -> list[Message]:
                return await forward(results, messages)

            running = Pipeline(
                handle_message=lambda processor, message, context: message.update_data(
                    lambda n: n * 10),
                handle_batch=handle_batch,
                producer={"module": (_producer_module(), {
                    "node": node, "subscribe_to": [("events", peer.node,
                                                    {"max_demand": 50})]})},
                processors={"default": {}}, batchers={"default": {"batch_size": 10}})
            async with running:
                got = await ev(peer, f"""
                    {{:ok, _}} = DemoConsumer.start_link({{:results, :"{node.name.name}"}},
                                                         max_demand: 20, report: self())
                    Enum.flat_map(1..10, fn _ ->
                      receive do {{:events, e}} -> e after 10_000 -> [:timeout] end
                    end)""")
                assert len(got) >= 10 and all(n % 10 == 0 for n in got)
                assert len(results.subscribers) == 1


def _producer_module() -> type:
    return GenStageProducer


@pytest.mark.parametrize("mode", ["demand"])
async def test_nothing_arrives_beyond_demand(standin_pair: tuple[Node, BeamPeer],
                                             mode: str) -> None:
    node, peer = standin_pair
    name = unique_name("source")
    await ev(peer, f"P = pb_gen_stage:producer({name}, #{{events => {{binary, <<\"x\">>}}}})")

    slow = asyncio.Event()

    async def handle(processor: str, message: Message, context: object) -> Message:
        if not slow.is_set():
            await asyncio.sleep(0.001)
        return message

    running = Pipeline(handle_message=handle, producer={"module": (_producer_module(), {
        "node": node, "subscribe_to": [(name, peer.node, {"max_demand": 30})]})},
        processors={"default": {"concurrency": 2, "max_demand": 5}})
    async with running:
        producer = running.producers[0]
        await eventually_async(lambda: running.stats()["handled"] >= 300)
        subscription = next(iter(producer.subscriber.subscriptions.values()))  # type: ignore[attr-defined]
        stats = await ev(peer, "pb_gen_stage:stats(P)")
        assert subscription.exceeded == 0
        # what arrived never passed what was asked, and no more than max_demand is held
        assert stats[Atom("sent")] <= stats[Atom("asked")]
        assert stats[Atom("asked")] - running.stats()["handled"] <= 30 + 10
        slow.set()


async def test_the_demo_producer_with_a_count_stops_producing(epmd: SystemEpmd) -> None:
    """The README's walkthrough prints four lines in iex, not a flood."""
    peer = BeamPeer.elixir(epmd_port=epmd.port)
    async with started(peer):
        got = await ev(peer, f"""
            Code.require_file("{DEMO}")
            {{:ok, producer}} = DemoProducer.start_link(:counted, 16)
            {{:ok, consumer}} = DemoConsumer.start_link(:counted, max_demand: 4, report: self())
            batches = Enum.map(1..4, fn _ ->
              receive do {{:events, e}} -> e after 10_000 -> :timeout end
            end)
            # The consumer has asked again, the producer has seen it, the consumer has passed on
            # whatever came of it: nothing more may be waiting.
            :sys.get_state(consumer)
            :sys.get_state(producer)
            :sys.get_state(consumer)
            more = receive do {{:events, e}} -> e after 0 -> :none end
            {{batches, more}}""")
    batches, more = got
    assert [list(batch) for batch in batches] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12],
                                                  [13, 14, 15, 16]]  # (small ints: charlists)
    assert more == Atom("none")
