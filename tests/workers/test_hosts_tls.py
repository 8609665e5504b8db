"""A front and two workers on three simulated hosts (testkit.netns) joined over TLS, with an
Elixir client on a fourth (issue 24), over IPv4 (inet_tls) and IPv6 (inet6_tls): a CA made
here signs each host a certificate for its name (the name a dialling node checks), every
node does mutual TLS (the server side verify_peer and fail_if_no_peer_cert, the client side
verify_peer) from the BEAM's option file, ``pybroadway serve`` and ``pybroadway worker``
reading it with ``--ssl-dist-optfile`` and the Elixir node with ``-proto_dist inet_tls
-ssl_dist_optfile``. The front also starts one worker of its own (``--workers 1``), which
gets its flags.

The client pushes as in test_hosts.py; every message is handled by the workers, once, none
lost, and no worker ever leaves. Every connection is TLS: the client's net_kernel says
``tls`` for the front and each worker, and on the switch every connection between the hosts
but EPMD's starts with a TLS handshake record, all of them in the family asked for. A
worker on a fifth host whose certificate another CA signed is refused, in one line on the
front (throttled: not more lines than it tried), again each time it tries, and never joins;
the others keep handling the stream meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testkit.certs import make_ca
from testkit.netns import EPMD_PORT, Hosts
from testkit.processes import WatchedProcess
from testkit.recorded import recorded
from testkit.tls import beam_args, optfile
from testkit.wait import eventually
from tests.workers.test_hosts import (
    CLIENT,
    TICKTIME,
    WORKER_SUMMARY,
    client_on,
    env,
    front_on,
    pushed_by,
    tails,
    worker,
)

pytestmark = [pytest.mark.beam, pytest.mark.timeout(90)]

HOSTS = ("hosta", "hostb", "hostc", "hostd", "hoste")
TLS_HANDSHAKE = "1603"
"""A TLS connection's first bytes: a handshake record (22) of version 3.x."""
REFUSED = "we refused the peer's certificate"
NODES = ("front@hosta", "front_w0@hosta", "w1@hostb", "w2@hostc")
"""The nodes the client connects to: the front, its own worker, the workers on hostb and
hostc."""


def option_files(directory: Path) -> dict[str, Path]:
    """Each host's ``-ssl_dist_optfile``: hosta to hostd have certificates from the CA they
    trust, hoste one from another CA (it trusts theirs, so the front is the one to refuse)."""
    ca, other = make_ca(directory / "ca"), make_ca(directory / "other", "another CA")
    return {name: optfile(directory / f"{name}.conf", ca,
                          (other if name == "hoste" else ca).issue(directory / name, name))
            for name in HOSTS}


def handled_since(log: Path, processes: tuple[WatchedProcess, ...], counts: list[int],
                  more: int) -> bool:
    """Whether each of ``processes`` handled ``more`` messages beyond its ``counts``."""
    return all(len(recorded(log, process.proc.pid)) >= count + more
               for process, count in zip(processes, counts, strict=True))


@pytest.mark.parametrize("proto_dist", ["inet_tls", "inet6_tls"], ids=["ipv4", "ipv6"])
def test_front_and_workers_on_three_hosts_over_tls_with_an_elixir_client_on_a_fourth(
        proto_dist: str, tmp_path: Path, leaves_nothing: None) -> None:
    ipv6 = proto_dist == "inet6_tls"
    log = tmp_path / "handled"
    stop_file = tmp_path / "stop"
    script = tmp_path / "client.exs"
    script.write_text(CLIENT)
    options = option_files(tmp_path / "pki")
    # The front's own worker asks for less than hostb's and hostc's (10): GenStage gives
    # each burst to those with the most demand, so the stream goes through the other hosts.
    config = tmp_path / "front.toml"
    config.write_text("[workers]\nmax_demand = 5\n")

    def tls(host: str) -> list[str]:
        return ["--proto-dist", proto_dist, "--ssl-dist-optfile", str(options[host])]

    with Hosts(HOSTS) as hosts:
        a, b, c, d, e = (hosts[name] for name in HOSTS)
        wire = hosts.watch_wire()
        for host in hosts:
            host.start_epmd(env=env(log), host="::" if ipv6 else "0.0.0.0")
        front = front_on(a, log, *tls("hosta"), "--workers", "1", "--config", str(config),
                         ipv6=ipv6)
        w1 = worker(b, "w1@hostb", log, *tls("hostb"), ipv6=ipv6)
        w2 = worker(c, "w2@hostc", log, *tls("hostc"), ipv6=ipv6)
        client = client_on(d, script, stop_file, log,  # Elixir runs on OTP 25
                           *beam_args("25", options["hostd"], ipv6=ipv6))
        for node in NODES[1:]:
            front.wait_logged(f"PyBroadway: worker {node} joined", timeout=30)
        joined = time.monotonic()
        client.wait_logged("registered", timeout=30)
        client.wait_logged(f"pg {','.join(NODES[1:])}", timeout=30)
        for node in NODES:
            client.wait_logged(f"nodeup {node} ", timeout=10)
        carriers = {line.split()[1]: line.split()[2] for line in client.stderr
                    if line.startswith("nodeup ")}
        assert carriers == dict.fromkeys(NODES, "tls")

        workers = (w1, w2)
        eventually(lambda: handled_since(log, workers, [0, 0], 20), timeout=20,
                   what=lambda: "both workers handle\n" + tails(front, w1, w2))

        # another CA's worker tries to join, and tries again: the front refuses each try
        before = [len(recorded(log, process.proc.pid)) for process in workers]
        stranger = worker(e, "w3@hoste", log, *tls("hoste"), ipv6=ipv6)
        e_address = e.address6 if ipv6 else e.address
        refusal = f"refused a TLS connection from {e_address}:"
        front.wait_logged(refusal, count=2, timeout=20)
        about_e = [line for line in front.stderr if e_address in line or "hoste" in line]
        assert about_e and all(refusal in line and REFUSED in line for line in about_e), \
            about_e
        eventually(lambda: handled_since(log, workers, before, 20), timeout=20,
                   what=lambda: "the workers handle on\n" + tails(front, w1, w2))
        stranger.wait_logged("TLS handshake to front@hosta failed: ")  # it says so
        assert stranger.proc.poll() is None  # and still tries
        stranger.kill()
        refusals = front.count(refusal)

        # The cluster holds: nothing would say so, so it is watched for two tick times (a
        # node ticking slower than the others is taken for dead within one, and global then
        # cuts it off from all).
        time.sleep(max(0.0, joined + 2 * TICKTIME - time.monotonic()))
        stop_file.touch()
        pushed = pushed_by(client)
        front.wait_logged("push_message: ", count=pushed, timeout=10)
        assert front.count("push_message: ") == pushed
        assert front.count(" left (") == 0, tails(front)  # no worker was ever cut off
        assert front.terminate() == 0, "\n".join(front.stderr[-30:])
        handled, failed, dropped = front.summary()
        for process in workers:
            assert process.terminate() == 0, "\n".join(process.stderr[-30:])
            assert WORKER_SUMMARY.match(process.stdout[-1]), process.stdout
        names = {address: host.name for host in hosts
                 for address in (host.address, f"[{host.address6}]")}
        connections = [line.split()[1:] for line in wire.stderr if line.startswith("conn ")]
        stderr = "\n".join(front.stderr + w1.stderr + w2.stderr)

    assert (handled, failed, dropped) == (pushed, 0, 0)
    done = recorded(log)  # by every worker: hostb's, hostc's and the front's own
    assert sorted(done) == list(range(1, pushed + 1)), "each message handled once, none lost"
    assert "PyBroadway: worker w3@hoste" not in stderr
    assert "Traceback" not in stderr, stderr

    assert all(dialler.startswith("[") == ipv6 for dialler, _, _ in connections), connections
    distribution = [(names[dialler.rsplit(":", 1)[0]], names[listener.rsplit(":", 1)[0]], first)
                    for dialler, listener, first in connections
                    if int(listener.rsplit(":", 1)[1]) != EPMD_PORT]
    assert all(first.startswith(TLS_HANDSHAKE) for _, _, first in distribution), distribution
    tries = sum(dialler == "hoste" for dialler, _, _ in distribution)
    assert refusals <= tries, (refusals, tries)
    pairs = {frozenset(ends) for *ends, _ in distribution}
    assert pairs >= {frozenset(pair) for pair in (("hostb", "hosta"), ("hostc", "hosta"),
                                                  ("hostd", "hosta"), ("hostd", "hostb"),
                                                  ("hostd", "hostc"), ("hoste", "hosta"))}, \
        pairs
