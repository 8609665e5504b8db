"""rpc / erpc into a Python node, from OTP 25/28 and Elixir."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pybroadway.term import Atom
from testkit.peers import BeamPeer, SystemEpmd
from tests.erldist.nodekit import WAIT, atom, ev, python_node, started

pytestmark = pytest.mark.timeout(60)


def expose_all(node) -> asyncio.Event:
    called = asyncio.Event()

    async def slow_double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    def fail() -> None:
        raise ValueError("nope")

    def note(value: object) -> None:
        called.set()

    node.expose("calc", "add", lambda a, b: a + b)
    node.expose("calc", "double", slow_double)
    node.expose("calc", "fail", fail)
    node.expose("calc", "note", note)
    return called


async def test_rpc_from_erlang(epmd: SystemEpmd, erl_node: BeamPeer) -> None:
    async with python_node(epmd.port) as node:
        noted = expose_all(node)
        py = atom(node)
        assert await ev(erl_node, f"rpc:call({py}, calc, add, [2, 40])") == 42
        assert await ev(erl_node, f"rpc:call({py}, calc, double, [21])") == 42
        assert await ev(erl_node, f"erpc:call({py}, calc, add, [1, 1])") == 2
        got = await ev(erl_node, f"rpc:call({py}, calc, missing, [1])")
        assert got[0] == Atom("badrpc") and got[1][0] == Atom("EXIT")
        assert got[1][1][0] == Atom("undef")
        got = await ev(erl_node, f"rpc:call({py}, calc, fail, [])")
        assert got[0] == Atom("badrpc") and got[1][0] == Atom("EXIT")
        assert b"ValueError: nope" in repr(got).encode()
        assert await ev(erl_node, f"rpc:cast({py}, calc, note, [x])") is True
        await asyncio.wait_for(noted.wait(), WAIT)
        assert await ev(erl_node, f"net_adm:ping({py})") == Atom("pong")


async def test_rpc_from_elixir(epmd: SystemEpmd) -> None:
    async with started(BeamPeer.elixir(epmd_port=epmd.port)) as ex, \
            python_node(epmd.port) as node:
        expose_all(node)
        py = atom(node)
        assert await ev(ex, f":rpc.call(:{py}, :calc, :add, [2, 40])") == 42
        got = await ev(ex, f":rpc.call(:{py}, :nothing, :here, [])")
        assert got == (Atom("badrpc"), (Atom("EXIT"), (Atom("undef"), [
            (Atom("nothing"), Atom("here"), [], [])])))
        assert await ev(ex, f"Node.ping(:{py})") == Atom("pong")


async def test_a_flood_of_failing_calls_is_logged_a_few_lines_a_second(
        epmd: SystemEpmd, erl_node: BeamPeer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway")
    async with python_node(epmd.port) as node:
        expose_all(node)
        py = atom(node)
        # Each an answered call: every one was handled (and logged, or counted) when it returns.
        assert await ev(erl_node, f"length([rpc:call({py}, calc, F, []) || "
                                  f"_ <- lists:seq(1, 200), F <- [fail, missing]])") == 400
        assert await ev(erl_node, f"net_adm:ping({py})") == Atom("pong")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rpc ")]
    assert 2 <= len(lines) < 40, lines  # 400 failed calls, 5 lines of each kind a second
