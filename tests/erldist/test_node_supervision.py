"""The node's system processes run under its supervisor kernel_sup: one that crashes comes
back with its name and the node goes on serving; past the restart intensity the node stops,
loudly, instead of running on without them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pybroadway.erldist import Node, global_names
from pybroadway.erldist.kernel import SYSTEM_INTENSITY, SYSTEM_PROCESSES
from pybroadway.term import Atom
from pybroadway.term.atoms import KILL, SHUTDOWN
from testkit.peers import BeamPeer, SystemEpmd
from tests.erldist.nodekit import Echo, atom, ev, python_node

pytestmark = pytest.mark.timeout(60)

NAMES = [spec.id for spec in SYSTEM_PROCESSES]


async def crash(node: Node, name: str) -> None:
    """Kill the process registered as ``name`` and wait until its successor is registered."""
    old = node.process(node.whereis(name))  # type: ignore[arg-type]
    assert old is not None
    node.exit(old.pid, KILL)
    await old.wait()
    assert node.supervisor is not None
    await node.supervisor.which_children()  # answered once the restart is done


@pytest.mark.parametrize("name", NAMES)
async def test_a_crashed_system_process_comes_back_with_its_name(
        epmd: SystemEpmd, erl_node: BeamPeer, name: str) -> None:
    async with python_node(epmd.port) as node:
        echo = node.spawn(Echo(), name="echo")
        assert await global_names.register_name(node, "py_echo", echo.pid)
        before = node.whereis(name)
        await crash(node, name)
        after = node.whereis(name)
        assert after is not None and after != before
        # The node serves as before: a BEAM connects, finds the global name, pings, calls rex.
        py = atom(node)
        assert await ev(erl_node, f"net_adm:ping({py})") == Atom("pong")
        assert await ev(erl_node, "global:sync()") == Atom("ok")
        assert await ev(erl_node, "global:whereis_name(py_echo)") == echo.pid
        assert await ev(erl_node, f"rpc:call({py}, py, whereis, [echo])") == echo.pid
        assert await global_names.register_name(node, "py_echo2", echo.pid)
        assert await ev(erl_node, "global:whereis_name(py_echo2)") == echo.pid


async def test_global_restarts_while_a_beam_is_connected(epmd: SystemEpmd,
                                                         erl_node: BeamPeer) -> None:
    """A new global_name_server drops its connections (the peers hold themselves synced with
    the one that died); the BEAM reconnects and syncs, and sees the node's names again."""
    async with python_node(epmd.port) as node:
        echo = node.spawn(Echo(), name="echo")
        assert await global_names.register_name(node, "py_echo", echo.pid)
        py = atom(node)
        assert await ev(erl_node, f"net_kernel:connect_node({py})") is True
        assert await ev(erl_node, "global:sync(), global:whereis_name(py_echo)") == echo.pid
        await ev(erl_node, f"erlang:monitor_node({py}, true)")
        await crash(node, "global_name_server")
        assert await ev(erl_node, f"receive {{nodedown, {py}}} -> down after 5000 -> up end") \
            == Atom("down")
        assert await ev(erl_node, f"net_kernel:connect_node({py})") is True
        assert await ev(erl_node, "global:sync(), global:whereis_name(py_echo)") == echo.pid


async def test_past_the_intensity_the_node_stops_loudly(
        epmd: SystemEpmd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="pybroadway")
    async with python_node(epmd.port) as node:
        restarts, _period = SYSTEM_INTENSITY
        for _ in range(restarts):
            await crash(node, "net_kernel")
        victim = node.process(node.whereis("net_kernel"))  # type: ignore[arg-type]
        assert victim is not None
        node.exit(victim.pid, KILL)
        assert await asyncio.wait_for(node.wait_down(), 10) is SHUTDOWN
        assert node.whereis("net_kernel") is None and node.nodes() == []
        assert any("cannot serve" in r.getMessage() for r in caplog.records)
