"""Terms 100,000 deep between a real erl node and a Python node, both ways: a BEAM writes and
reads any depth, and so does pybroadway. Nothing behind a deep message is lost, the connection
stays up, and a GenStage cancel reason that deep is logged (bounded) and answered whole."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from pybroadway.erldist.stages import ProducerStage
from pybroadway.term import Atom
from testkit.codec import same_term
from testkit.peers import BeamPeer, SystemEpmd, unique_name
from testkit.wait import eventually_async
from tests.erldist.nodekit import Echo, atom, ev, python_node

pytestmark = pytest.mark.timeout(120)

DEPTH = 100_000
K = Atom("k")
# The same deep terms in Erlang and in Python: a tuple in a tuple…, a list in a list…, a map
# in a map…, and a map of a list of a tuple… (three levels a turn).
ERLANG = """
    Nest = fun(Wrap, Times) -> lists:foldl(fun(_, Acc) -> Wrap(Acc) end, <<"end">>,
                                           lists:seq(1, Times)) end,
    Deep = [Nest(fun(X) -> {X} end, 100000), Nest(fun(X) -> [X] end, 100000),
            Nest(fun(X) -> #{k => X} end, 100000), Nest(fun(X) -> #{k => [{X, 1}]} end, 33334)],
    ok"""
WRAPS: list[tuple[Callable[[Any], Any], int]] = [
    (lambda inner: (inner,), DEPTH), (lambda inner: [inner], DEPTH),
    (lambda inner: {K: inner}, DEPTH), (lambda inner: {K: [(inner, 1)]}, 33_334)]


def python_deep() -> list[Any]:
    terms = []
    for wrap, times in WRAPS:
        value: Any = b"end"
        for _ in range(times):
            value = wrap(value)
        terms.append(value)
    return terms


async def test_deep_terms_from_erlang_arrive_whole_and_what_follows_too(
        epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        echo = node.spawn(Echo(), name="echo")
        target = f"{{echo, {atom(node)}}}"
        await ev(erl_node, ERLANG)
        await ev(erl_node, f"[{target} ! {{deep, D}} || D <- Deep], "
                           f"[{target} ! {{then, I}} || I <- lists:seq(1, 100)], ok")
        await eventually_async(lambda: len(echo.infos) == 104, timeout=60)
        expected = [(Atom("deep"), term) for term in python_deep()]
        for got, want in zip(echo.infos[:4], expected, strict=True):
            assert same_term(got, want, exact=False)
        assert echo.infos[4:] == [(Atom("then"), i) for i in range(1, 101)]
        # the same connection still carries calls
        assert Atom(erl_node.node) in node.nodes()
        assert await ev(erl_node, f"gen_server:call({target}, still)") == \
            (Atom("echo"), Atom("still"))


async def test_deep_terms_from_python_arrive_whole_on_the_beam(
        epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        await ev(erl_node, ERLANG + ", register(deep_rx, self())")
        to = ("deep_rx", erl_node.node)
        for term in python_deep():
            node.send(to, (Atom("deep"), term))
        node.send(to, Atom("then"))
        assert await ev(erl_node, """
            Got = [receive {deep, X} -> X after 30000 -> timeout end || _ <- Deep],
            Then = receive then -> then after 5000 -> timeout end,
            {Got =:= Deep, Then}""") == (True, Atom("then"))


async def test_a_deep_cancel_reason_is_logged_bounded_and_answered_whole(
        epmd: SystemEpmd, erl_node: BeamPeer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pybroadway.erldist.stages")
    async with python_node(epmd.port) as node:
        name = unique_name("events")
        producer = node.spawn(ProducerStage(), name=name)
        target = f"{{{name}, {atom(node)}}}"
        await ev(erl_node, ERLANG + f""",
            Ref = make_ref(),
            {target} ! {{'$gen_producer', {{self(), Ref}}, {{subscribe, nil, []}}}}""")
        await eventually_async(lambda: len(producer.subscribers) == 1, timeout=10)
        answer = await ev(erl_node, f"""
            [Reason | _] = Deep,
            {target} ! {{'$gen_producer', {{self(), Ref}}, {{cancel, Reason}}}},
            receive {{'$gen_consumer', {{_, Ref}}, {{cancel, Back}}}} -> Back =:= Reason
            after 30000 -> timeout end""")
        assert answer is True
        assert not producer.subscribers
        ended = [r.getMessage() for r in caplog.records if "subscription of" in r.getMessage()]
        assert len(ended) == 1 and ended[0].count("{") == 51 and len(ended[0]) < 500
