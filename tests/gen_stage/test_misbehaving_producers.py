"""BEAM producers that break GenStage's protocol (hand-written Erlang processes on OTP 25 and
28): one that sends far more than was asked cannot make the pipeline ask for more or hold it,
and one that flaps (subscribe, one event, cancel, again) cannot reset the backoff or fill the
log."""

from __future__ import annotations

import logging
import time

import pytest

from pybroadway.erldist import Node
from pybroadway.term import Charlist
from testkit.peers import BeamPeer, unique_name
from testkit.wait import eventually_async
from tests.erldist.nodekit import ev
from tests.gen_stage.helpers import pipeline

FLOOD = 200_000


def raw_producer(name: str, on_ask: str) -> str:
    """An Erlang producer registered as ``name`` that takes any subscription and answers the
    n-th ask ``{ask, N}`` of subscription ``{C, T}`` with ``on_ask`` (an expression over
    ``C``, ``T``, ``N``, ``Nth``); a cancel is confirmed; ``{asks, From}`` gets
    ``{asks, [N, ...]}``."""
    return f"""spawn(fun() ->
        register({name}, self()),
        Loop = fun Loop(Asks) ->
            receive
                {{'$gen_producer', _, {{subscribe, _, _}}}} -> Loop(Asks);
                {{'$gen_producer', {{C, T}}, {{cancel, R}}}} ->
                    C ! {{'$gen_consumer', {{self(), T}}, {{cancel, R}}}},
                    Loop(Asks);
                {{'$gen_producer', {{C, T}}, {{ask, N}}}} ->
                    Nth = length(Asks) + 1,
                    {on_ask},
                    Loop([N | Asks]);
                {{asks, From}} -> From ! {{asks, lists:reverse(Asks)}}, Loop(Asks)
            end
        end,
        Loop([])
    end)"""


async def asks(peer: BeamPeer, name: str) -> list[int]:
    reply = await ev(peer, f"{name} ! {{asks, self()}}, receive {{asks, A}} -> A end")
    return list(reply.data) if isinstance(reply, Charlist) else list(reply)


async def test_a_producer_that_sends_beyond_demand_is_asked_only_what_was_taken(
        standin_pair: tuple[Node, BeamPeer], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pybroadway")
    node, peer = standin_pair
    name = unique_name("flood")
    # asked 10, it sends 200,000; later asks get exactly what they ask, tagged
    await ev(peer, raw_producer(name, f"""C ! {{'$gen_consumer', {{self(), T}},
        case Nth of 1 -> lists:seq(1, {FLOOD}); _ -> [{{later, I}} || I <- lists:seq(1, N)] end}}
    """))
    # processors that take much at once (their demand is not the producer's)
    async with pipeline(node, [(name, peer.node, {"max_demand": 10, "min_demand": 5})],
                        processors={"concurrency": 2, "max_demand": 5000}) as (
                            _, handled, producer):
        await handled.wait(100)
        subscription = next(iter(producer.subscriber.subscriptions.values()))
        assert subscription.exceeded == FLOOD - 10
    asked = await asks(peer, name)
    assert asked[0] == 10 and max(asked) <= 10, asked[:10]
    # only what was asked was handled: the first 10 of the flood, then the later answers
    first = sorted(data for data in handled.data if type(data) is int)
    assert first == list(range(1, 11))
    assert len(handled.data) <= sum(asked)
    excess = [r for r in caplog.records if "beyond the demand" in r.getMessage()]
    assert len(excess) == 1, [r.getMessage() for r in excess]


async def test_a_flapping_producer_does_not_reset_the_backoff(
        standin_pair: tuple[Node, BeamPeer], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway.gen_stage")
    node, peer = standin_pair
    name = unique_name("flap")
    # every subscription gets one event, then a cancel
    await ev(peer, raw_producer(name, """C ! {'$gen_consumer', {self(), T}, [Nth]},
        C ! {'$gen_consumer', {self(), T}, {cancel, flap}}"""))
    began = time.monotonic()
    async with pipeline(node, [(name, peer.node)], resubscribe_interval=0.05) as (
            _, handled, producer):
        await eventually_async(lambda: producer.subscriptions_made >= 5)
        elapsed = time.monotonic() - began
        await handled.wait(4)
    # the waits before subscriptions 2..5 doubled: 0.05 + 0.1 + 0.2 + 0.4 s at least
    assert elapsed >= 0.75, elapsed
    said = [r.getMessage() for r in caplog.records
            if r.levelno >= logging.INFO and name in r.getMessage()]
    ended = [line for line in said if "subscribing again" in line]
    back = [line for line in said if "is back" in line]
    assert len(ended) == 1 and len(back) <= 1, said
