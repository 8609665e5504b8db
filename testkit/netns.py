"""Simulated hosts for tests: Linux network namespaces joined by a private switch.

    with Hosts(["hosta", "hostb"]) as hosts:
        a, b = hosts["hosta"], hosts["hostb"]
        a.start_epmd(); b.start_epmd()
        front = a.run([python, "-m", "testkit.netns_node", "front@hosta", ...])
        a.link_down()   # hosta's cable is pulled: its packets go nowhere
        a.link_up()

What it builds (everything named ``<prefix><pid>x<counter>…``, so parallel runs never meet):

- a namespace per host with ``lo`` up and an ``eth0`` at ``10.200.X.N/24`` and at
  ``fd00:200:X::N/64`` (IPv6, usable at once: no duplicate address detection), and one more
  namespace, the switch, holding a bridge with a port per host. The switch lives in no host
  and in no way touches the machine's own network: no address on the bridge, no default route,
  no NAT, nothing leaves the machine. Every host sees every other one directly.
- ``/etc/netns/<namespace>/hosts``, which ``ip netns exec`` mounts over ``/etc/hosts`` for the
  commands it runs, mapping every host name to both its addresses (so ``front@hosta`` resolves
  in every namespace, for IPv4 and IPv6 nodes alike), ``localhost`` to both loopbacks and
  ``ip6-localhost`` to ``::1``.

``X`` differs between runs (from the pid and a counter) although it need not: each host's
addresses exist only inside its namespace. Commands run inside a host with ``host.run``
(a :class:`~testkit.processes.WatchedProcess`; ``ip netns exec`` execs the command, so its pid
is the command's own) and are stopped by their pid. Leaving the ``with`` block, or the
interpreter exiting first, kills them and removes every namespace, link, bridge and
``/etc/netns`` entry made, whatever happened in the test.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from testkit.peers import IN_CI
from testkit.processes import WatchedProcess

NETNS_ETC = Path("/etc/netns")
EPMD_PORT = 4369
"""Each host has its own network, so every host's EPMD can take the standard port."""

_counter = itertools.count(1)
_live: set[Hosts] = set()


def require_netns() -> str:
    """The ``ip`` program, if this machine lets us make namespaces; otherwise fail under CI
    and skip elsewhere (as :func:`testkit.peers.require` does for missing programs)."""
    ip = shutil.which("ip")
    if ip is not None and os.geteuid() == 0:
        return ip
    message = ("simulated hosts need root and iproute2's `ip` (network namespaces): "
               + ("`ip` is not installed" if ip is None else "not running as root"))
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _kill(processes: list[WatchedProcess]) -> None:
    """Kill each of ``processes`` by its pid, and forget them."""
    for process in processes:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            process.kill()
    processes.clear()


class Host:
    """One simulated host: a namespace, its address and name."""

    def __init__(self, hosts: Hosts, name: str, netns: str, address: str, address6: str,
                 port: str) -> None:
        self.hosts = hosts
        self.name = name
        self.netns = netns
        self.address = address
        self.address6 = address6
        self._port = port  # its port on the switch
        self.processes: list[WatchedProcess] = []

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} {self.address6} netns={self.netns}>"

    def run(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
            cwd: Path | str | None = None) -> WatchedProcess:
        """Start ``argv`` inside this host; stopped (by its pid) when the hosts are removed."""
        process = WatchedProcess(["ip", "netns", "exec", self.netns, *argv], cwd=cwd, env=env)
        self.processes.append(process)
        return process

    def check(self, argv: Sequence[str], timeout: float = 30) -> str:
        """Run ``argv`` inside this host to the end; return its stdout (raise if it fails)."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], check=True,
                              capture_output=True, text=True, timeout=timeout).stdout

    def start_epmd(self, port: int = EPMD_PORT, *, env: dict[str, str] | None = None,
                   host: str = "0.0.0.0") -> WatchedProcess:
        """pybroadway's EPMD on all of this host's IPv4 addresses, or with ``host="::"`` on
        all its IPv6 ones (nodes here register over loopback, the other hosts look them up at
        :attr:`address` or :attr:`address6`); returns once it listens."""
        epmd = self.run([sys.executable, "-m", "pybroadway", "epmd", "serve", "--host",
                         host, "--port", str(port)], env=env)
        epmd.wait_logged("embedded epmd listening on", timeout=20)
        return epmd

    def link_down(self) -> None:
        """Pull the cable: the host's port on the switch goes down, its packets go nowhere
        (its own interface stays up, as on a host whose switch failed)."""
        _ip("-n", self.hosts.switch, "link", "set", self._port, "down")

    def link_up(self) -> None:
        _ip("-n", self.hosts.switch, "link", "set", self._port, "up")

    def stop_processes(self) -> None:
        _kill(self.processes)


class Hosts:
    """``names`` simulated hosts (or ``count`` named ``hosta``, ``hostb``, …) on one private
    switch; a context manager. ``hosts[name]`` or ``hosts[i]`` gives a :class:`Host`."""

    def __init__(self, names: Sequence[str] | None = None, *, count: int = 2,
                 prefix: str = "pbns") -> None:
        names = list(names) if names is not None else [f"host{chr(97 + i)}"
                                                       for i in range(count)]
        if not 0 < len(names) < 250:
            raise ValueError("between 1 and 249 hosts")
        serial = next(_counter)
        self.tag = f"{prefix}{os.getpid()}x{serial}"
        x = (os.getpid() + serial) % 250 + 1
        self.subnet = f"10.200.{x}"
        self.subnet6 = f"fd00:200:{x}::"
        self.switch = f"{self.tag}sw"
        self.hosts = [Host(self, name, f"{self.tag}{name}", f"{self.subnet}.{i + 1}",
                           f"{self.subnet6}{i + 1}", f"port{i + 1}")
                      for i, name in enumerate(names)]
        self._made: list[str] = []  # namespaces created, in order
        self._switch_processes: list[WatchedProcess] = []

    def __getitem__(self, key: int | str) -> Host:
        if isinstance(key, int):
            return self.hosts[key]
        for host in self.hosts:
            if host.name == key:
                return host
        raise KeyError(key)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def watch_wire(self) -> WatchedProcess:
        """Start :mod:`testkit.wire` on the switch: a line for each TCP connection between the
        hosts, with its dialler's first bytes (what went over the wire, not what a node says
        it sent). Returns once it captures; stopped when the hosts are removed."""
        watcher = WatchedProcess(["ip", "netns", "exec", self.switch, sys.executable, "-m",
                                  "testkit.wire"], cwd=Path(__file__).resolve().parents[1])
        self._switch_processes.append(watcher)
        watcher.wait_logged("capturing")
        return watcher

    def hosts_file(self) -> str:
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
        lines += [f"{address} {host.name}" for host in self.hosts
                  for address in (host.address, host.address6)]
        return "\n".join(lines) + "\n"

    def __enter__(self) -> Hosts:
        require_netns()
        _live.add(self)
        try:
            self._build()
        except BaseException:
            self.remove()
            raise
        return self

    def _build(self) -> None:
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts:
            self._add_namespace(host.netns)
            etc = NETNS_ETC / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(self.hosts_file())
            # Made inside the namespaces at once: no name ever appears on the machine itself.
            _ip("link", "add", "eth0", "netns", host.netns, "type", "veth", "peer", "name",
                host._port, "netns", self.switch)
            _ip("-n", self.switch, "link", "set", host._port, "master", "br0")
            _ip("-n", self.switch, "link", "set", host._port, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.netns, "addr", "add", f"{host.address6}/64", "dev", "eth0", "nodad")
            _ip("-n", host.netns, "link", "set", "eth0", "up")

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def remove(self) -> None:
        """Kill the hosts' processes and remove all that was made. Idempotent."""
        for host in self.hosts:
            host.stop_processes()
        _kill(self._switch_processes)
        # A namespace takes its links with it (both ends of a veth go together).
        for name in reversed(self._made):
            _ip("netns", "delete", name, check=False)
        self._made.clear()
        for host in self.hosts:
            shutil.rmtree(NETNS_ETC / host.netns, ignore_errors=True)
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only if it is empty: someone else's entries stay
        _live.discard(self)

    def __exit__(self, *exc: object) -> None:
        self.remove()


@atexit.register
def _remove_leftovers() -> None:
    for hosts in list(_live):
        hosts.remove()
