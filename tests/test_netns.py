"""Simulated hosts (testkit.netns): nodes in separate network namespaces find each other through
each host's EPMD, and a pulled cable is a nodedown within the tick time."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from testkit.netns import Host, Hosts
from testkit.peers import erl_for
from testkit.processes import WatchedProcess, python_env

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
TICKTIME = 4


def env() -> dict[str, str]:
    """What every program in a host gets: this checkout on the path, the host's EPMD."""
    return python_env(PYTHONPATH=str(ROOT), ERL_EPMD_PORT="4369",
                      NETNS_TICKTIME=str(TICKTIME))



def python_node(host: Host, name: str, peer: str | None = None, *, ipv6: bool = False,
                address: str | None = None) -> WatchedProcess:
    """``name@host`` (or ``name`` as it is, if it has a host) listening on ``address``, by
    default the host's (``ipv6``: its IPv6 one; an IPv6 address makes an IPv6 node)."""
    address = address or (host.address6 if ipv6 else host.address)
    node = host.run([sys.executable, "-m", "testkit.netns_node",
                     name if "@" in name else f"{name}@{host.name}", address,
                     *([peer] if peer else [])], env=env(), cwd=ROOT)
    node.wait_logged("started")
    return node


def pull_cable(host: Host, *sightings: tuple[WatchedProcess, str]) -> None:
    """Take ``host``'s link down: each process says its line (a nodedown) within the tick
    time."""
    host.link_down()
    cut = time.monotonic()
    for process, line in sightings:
        process.wait_logged(line, timeout=TICKTIME * 3)
    assert time.monotonic() - cut < TICKTIME * 2


def test_two_python_hosts_connect_lose_the_link_and_reconnect(leaves_nothing: None) -> None:
    with Hosts(["hosta", "hostb"]) as hosts:
        a, b = hosts["hosta"], hosts["hostb"]
        assert "hosta" in b.check(["cat", "/etc/hosts"])
        wire = hosts.watch_wire()
        for host in hosts:
            host.start_epmd(env=env())
        front = python_node(a, "front")
        worker = python_node(b, "worker", peer="front@hosta")
        worker.wait_logged("reply {:echo, :hello}")
        front.wait_logged("nodeup worker@hostb")
        # on the wire: hostb asks hosta's EPMD (PORT_PLEASE2_REQ, 122), then sends its name
        # (a plain distribution handshake: 'N', 78) to the port it was given
        wire.wait_logged(f"conn {b.address}:", count=2)
        dialled = [line.split()[2:] for line in wire.stderr
                   if line.startswith(f"conn {b.address}:")]
        assert [(listener == f"{a.address}:4369", first[4:])
                for listener, first in dialled[:2]] == [(True, "7a"), (False, "4e")]

        pull_cable(a, (front, "nodedown worker@hostb"), (worker, "nodedown front@hosta"))

        a.link_up()
        worker.wait_logged("reply {:echo, :hello}", count=2, timeout=15)
        front.wait_logged("nodeup worker@hostb", count=2)


@pytest.mark.beam
def test_an_erlang_host_connects_to_a_python_host(leaves_nothing: None) -> None:
    erl = erl_for("25")
    with Hosts(["hosta", "hostc"]) as hosts:
        a, c = hosts["hosta"], hosts["hostc"]
        for host in hosts:
            host.start_epmd(env=env())
        front = python_node(a, "front")
        program = (
            "spawn(fun() -> net_kernel:monitor_nodes(true),"
            "  L = fun Loop() -> receive M -> io:format(standard_error, \"~p~n\", [M]), Loop()"
            "  end end, L() end),"
            "io:format(standard_error, \"ping ~p~n\", [net_adm:ping('front@hosta')]),"
            "io:format(standard_error, \"call ~p~n\","
            "          [catch gen_server:call({echo, 'front@hosta'}, hi)]).")
        beam = c.run([erl, "-sname", "e@hostc", "-setcookie", "netns", "-start_epmd", "false",
                      "-kernel", "net_ticktime", str(TICKTIME), "-noshell", "-noinput",
                      "-eval", program], env=env())
        beam.wait_logged("call {echo,hi}", timeout=30)
        assert beam.count("ping pong") == 1
        front.wait_logged("nodeup e@hostc")

        pull_cable(c, (front, "nodedown e@hostc"), (beam, "{nodedown,front@hosta}"))
