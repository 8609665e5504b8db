"""A client of the library's other version crashes on every pull request it is sent (it has a
``handle_cast`` clause for its own version's atom only): the receiver says so once, at
WARNING, with the ``--request-atom`` that client needs."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pybroadway.otp_distribution._version_mismatch import (
    FUNCTION_CLAUSE,
    HANDLE_CAST,
    HANDLE_INFO,
    misunderstood,
)
from pybroadway.term import Atom, ImproperList
from pybroadway.term.atoms import GEN_CAST
from testkit.peers import SystemEpmd
from testkit.wait import eventually_async
from tests.otp_distribution.helpers import elixir_peer, receiver_ref, server


def one_version_client(module: str, request: str, answer: str) -> str:
    """An Elixir client that, like each version of the library's, understands one request."""
    return f'''
defmodule {module} do
  use GenServer

  def start(receiver), do: GenServer.start(__MODULE__, receiver)

  def init(receiver) do
    :ok = GenServer.call(receiver, :register)
    Process.monitor(receiver)
    {{:ok, receiver}}
  end

  def handle_cast(:{request}, receiver) do
    GenServer.cast(receiver, {{:{answer}, "I'm alive!"}})
    {{:noreply, receiver}}
  end
end
:ok
'''


CLIENTS = {"first": ("PbFirstVersionClient", "request_message", "respond_to_pull_request"),
           "last": ("PbLastVersionClient", "pull_message", "send_message")}


def downs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.INFO and " down: " in r.getMessage()]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and r.name == "pybroadway.otp_distribution"]


@pytest.mark.parametrize(("client", "server_atom", "needed"),
                         [("first", "pull_message", "request_message"),
                          ("last", "request_message", "pull_message")])
async def test_a_client_of_the_other_version_is_named_once(
        epmd: SystemEpmd, caplog: pytest.LogCaptureFixture, client: str, server_atom: str,
        needed: str) -> None:
    async with server(epmd.port, mode="pull", request_atom=server_atom) as (node, *_):
        caplog.set_level(logging.INFO, "pybroadway.otp_distribution")
        peer = await elixir_peer(epmd.port, node)
        with peer:
            module = CLIENTS[client][0]
            await peer.aeval(one_version_client(*CLIENTS[client]))
            # Three clients, each crashing on its first request: one warning for them all.
            await peer.aeval(f"for _ <- 1..3, do: {module}.start({receiver_ref(node)})")
            await eventually_async(lambda: len(downs(caplog)) == 3,
                                   what=lambda: f"clients down: {downs(caplog)}")
            assert all("function_clause" in line for line in downs(caplog))
            [warning] = warnings(caplog)
            assert f"crashed on :{server_atom}:" in warning
            assert f"{client} version" in warning
            assert f"--request-atom {needed}" in warning
            assert f" of {peer.node} " in warning


@pytest.mark.parametrize("client", ["first", "last"])
async def test_a_client_of_the_same_version_is_not_named(
        epmd: SystemEpmd, caplog: pytest.LogCaptureFixture, client: str) -> None:
    module, request, answer = CLIENTS[client]
    async with server(epmd.port, mode="pull", request_atom=request) as (
            node, _pipeline, collector, _producer):
        caplog.set_level(logging.INFO, "pybroadway.otp_distribution")
        peer = await elixir_peer(epmd.port, node)
        with peer:
            await peer.aeval(one_version_client(module, request, answer))
            await peer.aeval(f"{{:ok, c}} = {module}.start({receiver_ref(node)})")
            await collector.wait_for(10, timeout=10)
            # A function_clause on a cast that is not the request is the client's own bug.
            await peer.aeval("GenServer.cast(c, :something_else)")
            await eventually_async(lambda: len(downs(caplog)) == 1)
            assert "something_else" in downs(caplog)[0]
            assert warnings(caplog) == []


REQUEST = Atom("pull_message")


def deep_list(depth: int) -> list[Any]:
    term: list[Any] = []
    for _ in range(depth):
        term = [term]
    return term


@pytest.mark.parametrize("reason", [
    None, FUNCTION_CLAUSE, (FUNCTION_CLAUSE,), (FUNCTION_CLAUSE, REQUEST),
    (FUNCTION_CLAUSE, []), (FUNCTION_CLAUSE, ImproperList([REQUEST], REQUEST)),
    (FUNCTION_CLAUSE, [REQUEST]), (FUNCTION_CLAUSE, [(Atom("m"), HANDLE_CAST, 2, [])]),
    (FUNCTION_CLAUSE, [(Atom("m"), HANDLE_CAST, [], [])]),
    (FUNCTION_CLAUSE, [(Atom("m"), Atom("init"), [REQUEST], [])]),
    (FUNCTION_CLAUSE, [(Atom("m"), HANDLE_CAST, [Atom("request_message"), 0], [])]),
    (FUNCTION_CLAUSE, [(Atom("m"), HANDLE_INFO, [REQUEST, 0], [])]),
    (FUNCTION_CLAUSE, [(Atom("m"), HANDLE_INFO, [(GEN_CAST,), 0], [])]),
    (Atom("badarg"), [(Atom("m"), HANDLE_CAST, [REQUEST, 0], [])]),
    (FUNCTION_CLAUSE, deep_list(100_000)),
])
def test_other_exit_reasons_are_not_taken_for_the_other_version(reason: Any) -> None:
    assert not misunderstood(reason, REQUEST)


@pytest.mark.parametrize("request_arg", [REQUEST, (GEN_CAST, REQUEST)])
def test_the_request_on_top_of_a_long_stack_is_recognised(request_arg: Any) -> None:
    callback = HANDLE_CAST if request_arg is REQUEST else HANDLE_INFO
    frames = [(Atom("m"), callback, [request_arg, list(range(100_000))], [])] * 100_000
    assert misunderstood((FUNCTION_CLAUSE, frames), REQUEST)
