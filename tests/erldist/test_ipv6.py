"""IPv6 distribution (``Node(ipv6=True)``, as ``erl -proto_dist inet6_tcp``): BEAMs and Python
nodes named ``name@::1`` connect both ways over IPv6 loopback, through Erlang's epmd and through
the embedded one; a node of the other family is refused at once, with one clear line."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pybroadway.erldist import Node
from pybroadway.erldist import epmd as epmd_client
from pybroadway.erldist.connections import split_node_name
from pybroadway.errors import ArgumentError
from pybroadway.term import Atom
from testkit.netns import Hosts
from testkit.peers import BeamPeer, SystemEpmd, erl_for, free_port, unique_name
from tests.erldist.nodekit import WAIT, Echo, atom, ev, python_node, started
from tests.test_netns import env
from tests.test_netns import python_node as netns_python_node

pytestmark = pytest.mark.timeout(60)

INET6 = ["-proto_dist", "inet6_tcp"]
V6_LOOPBACK = (0, 0, 0, 0, 0, 0, 0, 1)


def inet6_beam(otp: str, epmd_port: int) -> BeamPeer:
    return BeamPeer.erlang(otp, epmd_port=epmd_port, extra=INET6, host="::1")


@contextlib.asynccontextmanager
async def ipv6_node(epmd_port: int, **options: Any) -> AsyncIterator[Node]:
    async with python_node(epmd_port, name=unique_name("py6") + "@::1", ipv6=True,
                           **options) as node:
        node.spawn(Echo(), name="echo")
        yield node


async def seen_from(beam: BeamPeer, node: Node) -> tuple[Any, Any]:
    """The address and family the BEAM's connection to ``node`` runs over."""
    return await ev(beam, f"(fun() -> {{ok, I}} = net_kernel:node_info({atom(node)}),"
                          "{net_address, {Ip, _}, _, _, Family} = proplists:get_value(address, I),"
                          "{Ip, Family} end)()")


async def talk_both_ways(beam: BeamPeer, node: Node, family: str = "inet6") -> None:
    """The BEAM dials the node, they call each other, then the node dials the BEAM; the BEAM
    says it talks to the node over ::1, of the address ``family`` it reports."""
    py = atom(node)
    assert await ev(beam, f"net_adm:ping({py})") == Atom("pong")
    assert await seen_from(beam, node) == (V6_LOOPBACK, Atom(family))
    assert await ev(beam, f"gen_server:call({{echo, {py}}}, hi)") == (Atom("echo"), Atom("hi"))
    assert await ev(beam, f"rpc:call({py}, py, whereis, [echo])") != Atom("undefined")

    assert node.disconnect(beam.node)
    assert await node.connect(beam.node, check=True)
    rex = ("rex", beam.node)
    assert await node.call(rex, (Atom("call"), Atom("erlang"), Atom("node"), [], Atom("user")),
                           timeout=WAIT) == Atom(beam.node)
    assert await seen_from(beam, node) == (V6_LOOPBACK, Atom(family))


@pytest.mark.parametrize("host", [None, "::"], ids=["default_host", "any_host"])
async def test_inet6_beam_and_python_connect_through_erlangs_epmd(epmd: SystemEpmd, otp: str,
                                                                 host: str | None) -> None:
    async with ipv6_node(epmd.port, host=host) as node, \
            started(inet6_beam(otp, epmd.port)) as beam:
        assert node.listen_host == host or node.listen_host == "::1"
        await talk_both_ways(beam, node)


async def test_inet6_beam_and_python_connect_through_the_embedded_epmd(otp: str) -> None:
    port = free_port()  # nothing there: the Python node starts the embedded EPMD
    async with ipv6_node(port) as node, started(inet6_beam(otp, port)) as beam:
        # It listens on both loopbacks, as Erlang's epmd: the BEAM registered over ::1.
        for host in ("127.0.0.1", "::1"):
            assert sorted(name for name, _ in await epmd_client.names(host, port)) == \
                sorted([node.alive_name, beam.name])
        await talk_both_ways(beam, node)


async def test_an_ipv6_node_needs_an_epmd_on_ipv6_loopback() -> None:
    async with epmd_client.EmbeddedEpmd() as ipv4_only:  # listens on 127.0.0.1 only
        node = Node(unique_name("py6") + "@::1", cookie="pybroadway", ipv6=True,
                    epmd_port=ipv4_only.port)
        with pytest.raises(epmd_client.EpmdUnreachable, match=r"but not at \[::1\]"):
            await node.start()


def test_a_node_name_has_one_at_and_may_have_an_ipv6_host() -> None:
    assert split_node_name("py@::1") == ("py", "::1")
    assert split_node_name("py@fd00:200:1::2") == ("py", "fd00:200:1::2")
    with pytest.raises(ArgumentError, match="name@host"):  # dist_util:split_node refuses it
        split_node_name("py@host@::1")


def refusal(caplog: pytest.LogCaptureFixture, peer: str) -> str:
    """The one log line that says why ``peer`` could not be reached."""
    lines = [r.getMessage() for r in caplog.records if f"could not connect to {peer}" in
             r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "\n" not in lines[0]
    return lines[0]


async def test_ipv4_and_ipv6_python_nodes_refuse_each_other_at_once(
        epmd: SystemEpmd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway")
    async with ipv6_node(epmd.port) as six, python_node(epmd.port) as four:
        assert not await four.connect(six.name)
        assert "::1 has no IPv4 address" in refusal(caplog, six.name.name)
        # localhost is ::1 to it: Erlang's epmd there gives the port, where nothing listens.
        assert not await six.connect(four.name)
        assert "Connect call failed ('::1'" in refusal(caplog, four.name.name)
        assert four.nodes() == six.nodes() == []


async def test_ipv4_and_ipv6_beams_and_python_nodes_refuse_each_other(
        epmd: SystemEpmd, otp: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway")
    async with started(inet6_beam(otp, epmd.port)) as beam6, \
            started(BeamPeer.erlang(otp, epmd_port=epmd.port)) as beam4, \
            ipv6_node(epmd.port) as six, python_node(epmd.port) as four:
        assert await ev(beam4, f"net_adm:ping({atom(six)})") == Atom("pang")
        assert await ev(beam6, f"net_adm:ping({atom(four)})") == Atom("pang")
        assert not await four.connect(beam6.node)
        assert "::1 has no IPv4 address" in refusal(caplog, beam6.node)
        assert not await six.connect(beam4.node)
        assert "Connect call failed ('::1'" in refusal(caplog, beam4.node)
        assert four.nodes() == six.nodes() == []


@pytest.mark.beam
def test_hosts_talk_over_ipv6_only(leaves_nothing: None) -> None:
    """Simulated hosts whose EPMDs listen on IPv6 only: IPv6 Python nodes and an inet6_tcp BEAM
    find and call each other by host name (``hosta`` resolves to both families: the IPv6
    address is taken), and by ``ip6-localhost`` (IPv6 only)."""
    erl = erl_for("25")
    with Hosts(["hosta", "hostb", "hostc"]) as hosts:
        a, b, c = hosts["hosta"], hosts["hostb"], hosts["hostc"]
        for host in hosts:
            host.start_epmd(env=env(), host="::")
        front = netns_python_node(a, "front", ipv6=True)
        local = netns_python_node(c, "local@ip6-localhost", address="::1")
        worker = netns_python_node(b, "worker", peer="front@hosta", ipv6=True)
        near = netns_python_node(c, "near", peer="local@ip6-localhost", ipv6=True)
        for node in (worker, near):
            node.wait_logged("reply {:echo, :hello}")
        front.wait_logged("nodeup worker@hostb")
        local.wait_logged("nodeup near@hostc")
        program = (
            "io:format(standard_error, \"ping ~p~n\", [net_adm:ping('front@hosta')]),"
            "{ok, I} = net_kernel:node_info('front@hosta'),"
            "{net_address, {Ip, _}, _, _, Family} = proplists:get_value(address, I),"
            "io:format(standard_error, \"over ~s ~p~n\", [inet:ntoa(Ip), Family]),"
            "io:format(standard_error, \"call ~p~n\","
            "          [catch gen_server:call({echo, 'front@hosta'}, hi)]),"
            "io:format(standard_error, \"local ~p~n\","
            "          [catch gen_server:call({echo, 'local@ip6-localhost'}, hi)]).")
        beam = c.run([erl, "-sname", "e@hostc", "-setcookie", "netns", "-start_epmd", "false",
                      *INET6, "-noshell", "-noinput", "-eval", program], env=env())
        beam.wait_logged("local {echo,hi}", timeout=30)
        assert beam.count("call {echo,hi}") == 1
        assert beam.count(f"over {a.address6} inet6") == 1
        front.wait_logged("nodeup e@hostc")
