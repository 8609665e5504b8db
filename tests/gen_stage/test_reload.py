"""A pipeline fed by a GenStage producer on a BEAM node, reloaded in place three times: the
subscription is the same one throughout (no cancel, no new subscribe), every event is handled
once, and no more was sent than asked."""

from __future__ import annotations

from typing import Any

from pybroadway.erldist import Node
from pybroadway.gen_stage import GenStageProducer
from pybroadway.pipeline import Message, Pipeline
from pybroadway.term import Atom
from testkit.peers import BeamPeer, unique_name
from testkit.wait import eventually_async
from tests.erldist.nodekit import ev
from tests.gen_stage.helpers import Handled


def versioned(handled: Handled, version: str) -> Any:
    def handle_message(processor: str, message: Message, context: Any) -> Message:
        return handled.handle_message(processor, message.update_data(
            lambda data: (version, data)), context)
    return handle_message


async def test_a_subscription_survives_three_reloads(
        standin_pair: tuple[Node, BeamPeer]) -> None:
    node, peer = standin_pair
    name = unique_name("source")
    total = 6000
    await ev(peer, f"P = pb_gen_stage:producer({name}, #{{label => ev, limit => {total}}})")
    handled = Handled()
    producer = {"module": (GenStageProducer, {
        "node": node, "subscribe_to": [(name, peer.node, {"max_demand": 200})]})}
    pipeline = Pipeline(handle_message=versioned(handled, "v1"), producer=producer,
                        processors={"default": {"concurrency": 2}})
    async with pipeline:
        source: GenStageProducer = pipeline.producers[0]  # type: ignore[assignment]
        await handled.wait(200)
        subscription = source.sources[0].subscription
        for step, version in enumerate(("v2", "v3", "v4"), start=1):
            await handled.wait(step * 1000)
            await pipeline.reload(Pipeline(handle_message=versioned(handled, version),
                                           producer=producer,
                                           processors={"default": {"concurrency": 2}}))
        await handled.wait(total)
        assert source.subscriptions_made == 1
        assert source.sources[0].subscription is subscription
        stats = await eventually_async(lambda: _sent_all(peer, total))
    numbers = sorted(number for _, (_label, number) in handled.data)
    assert numbers == list(range(1, total + 1))
    assert list(dict.fromkeys(version for version, _ in handled.data)) == [
        "v1", "v2", "v3", "v4"]
    assert stats[Atom("asked")] >= total


async def _sent_all(peer: BeamPeer, total: int) -> dict[Any, Any] | None:
    stats = await ev(peer, "pb_gen_stage:stats(P)")
    return stats if stats[Atom("sent")] == total else None
