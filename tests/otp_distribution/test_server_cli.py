"""The server as users run it: ``examples/broadway.py`` and ``python -m pybroadway.cli serve``
as processes of their own (with their embedded EPMD), fed by ``examples/client.ex`` from an
Elixir node (over TLS too), stopped with SIGTERM."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pybroadway.term import Atom, decode
from testkit.peers import BeamPeer, free_port, unique_name, wait_for_port
from testkit.processes import WatchedProcess
from testkit.tls import beam_args, optfile
from testkit.wait import eventually
from tests.conftest import Pki

pytestmark = pytest.mark.beam  # every test talks to the server from an Elixir node

ROOT = Path(__file__).resolve().parents[2]
COOKIE = "cli_cookie"
HANDLED_NUMBER = re.compile(r"\[INFO\] handled: %Broadway\.Message\{data: (\d+),")
RECEIVER = "{:global, :off_broadway_otp_distribution_receiver}"


class ServerProcess(WatchedProcess):
    """A server subprocess on a private EPMD port, with a node name of its own."""

    def __init__(self, argv: list[str]) -> None:
        self.epmd_port = free_port()
        self.sname = f"{unique_name('srv')}@localhost"
        super().__init__([*argv, "--cookie", COOKIE, "--sname", self.sname,
                          "--epmd-port", str(self.epmd_port)], cwd=ROOT)

    def stop(self, timeout: float = 30) -> tuple[int, int, int]:
        """SIGTERM; check it exits 0 and ends with the summary line, which is returned."""
        assert self.terminate(timeout=timeout) == 0, "\n".join(self.stderr[-30:])
        return self.summary()


@contextmanager
def running(argv: list[str]) -> Iterator[ServerProcess]:
    server = ServerProcess(argv)
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def examples_client(server: ServerProcess, extra_erl: str = "") -> Iterator[BeamPeer]:
    """An Elixir node on the server's EPMD (``extra_erl``: more ``erl`` arguments), connected,
    with ExamplesClient started."""
    with BeamPeer.elixir(epmd_port=server.epmd_port, cookie=COOKIE,
                         extra_erl=extra_erl) as peer:
        peer.wait_started()
        # retried: with --quiet the server logs nothing that says it is up
        connected = eventually(
            lambda: decode(peer.eval(f'Node.connect(:"{server.sname}")')) is True)
        assert connected is True
        # count what the node logs, at iex's level (debug)
        peer.eval("Logger.configure(level: :debug); counter = :counters.new(1, []); "
                  ":persistent_term.put(:logged, counter); :logger.add_primary_filter("
                  ":count, {fn _event, c -> :counters.add(c, 1, 1); :ignore end, counter})")
        peer.eval(f'Code.require_file("{ROOT / "examples" / "client.ex"}")')
        assert decode(peer.eval("elem(ExamplesClient.start(), 0)")) == Atom("ok")
        yield peer


def logged(peer: BeamPeer) -> int:
    """Log events the node has produced since :func:`examples_client` started it."""
    return int(decode(peer.eval(":counters.get(:persistent_term.get(:logged), 1)")))


def test_example_server_sigterm_mid_stream_handles_everything_it_read() -> None:
    with running([sys.executable, "examples/broadway.py"]) as server:
        server.wait_logged(" serves off_broadway_otp_distribution_receiver in push mode")
        with examples_client(server) as peer:
            peer.eval('ExamplesClient.push_message("How are you?")')
            server.wait_logged('handled: %Broadway.Message{data: "How are you?"')
            # a burst from another process; SIGTERM while it is still being handled
            peer.eval("parent = self(); spawn(fn -> for i <- 1..20_000, "
                      "do: ExamplesClient.push_message(i); send(parent, :burst_sent) end)")
            server.wait_logged("[INFO] handled: ", 500)
            handled, failed, dropped = server.stop()
            read = server.count("[INFO] push_message: ")
            assert handled == server.count("[INFO] handled: ")
            # draining stops reading from the client: everything read is handled, none is
            # failed or lost (what the client sent later was never taken)
            assert (handled, failed) == (read, 0), (handled, failed, read)
            assert dropped == 0
            assert handled >= 500 and read <= 20_001
            # the burst is handled from its start with no gap: 1..handled - 1 and the greeting
            numbers = sorted(int(found.group(1)) for line in server.stderr
                             if (found := HANDLED_NUMBER.search(line)))
            assert numbers == list(range(1, handled))


@pytest.mark.parametrize("distribution", ["tcp", "tls"])
def test_cli_serve_quiet_handles_a_whole_burst_then_stops(distribution: str, pki: Pki,
                                                          tmp_path: Path) -> None:
    """Over plain TCP, and over TLS: ``serve --ssl-dist-optfile F``, the Elixir node started
    with ``-proto_dist inet_tls -ssl_dist_optfile F``, one option file for both."""
    flags, erl = [], ""
    if distribution == "tls":
        options = optfile(tmp_path / "ssl_dist.conf", pki.ca, pki.node)
        flags, erl = ["--ssl-dist-optfile", str(options)], " ".join(beam_args("25", options))
    with running([sys.executable, "-m", "pybroadway.cli", "serve", "--quiet", *flags]) as server:
        wait_for_port(server.epmd_port)
        with examples_client(server, erl) as peer:
            protocol = peer.eval(f'{{:ok, info}} = :net_kernel.node_info(:"{server.sname}"); '
                                 "elem(info[:address], 3)")
            assert decode(protocol) == Atom(distribution)
            peer.eval("for i <- 1..2_000, do: ExamplesClient.push_message(i)")
            # ExamplesClient forwarded them all; a call on the same connection, answered after
            # the receiver took everything sent before it
            peer.eval(":sys.get_state(ExamplesClient)")
            assert decode(peer.eval(f"GenServer.call({RECEIVER}, :unregister)")) == Atom("ok")
            assert server.count("push_message") == 0  # --quiet: no per-message lines
            assert server.stop() == (2_000, 0, 0)


@pytest.mark.parametrize(("request_atom", "answer"), [
    ("request_message", "respond_to_pull_request"),  # the library's first version
    ("pull_message", "send_message"),  # its last
])
def test_example_server_pull_mode(request_atom: str, answer: str) -> None:
    with running([sys.executable, "examples/broadway.py", "--mode", "pull",
                  "--request-atom", request_atom, "--log-level", "DEBUG"]) as server:
        server.wait_logged(" serves off_broadway_otp_distribution_receiver in pull mode")
        with examples_client(server) as peer:
            server.wait_logged("""handled: %Broadway.Message{data: "I'm alive!\"""", 50)
            assert server.count(f"[DEBUG] {request_atom}: ") >= 50  # requests: at DEBUG
            # iex stays usable: the client answered every request without a log line
            assert logged(peer) == 0
            handled, failed, dropped = server.stop()
            assert handled >= 50
            assert handled == server.count("[INFO] handled: ")
            assert handled + failed == server.count(f"""[INFO] {answer}: "I'm alive!\"""")
            assert dropped == 0
            assert peer.proc.poll() is None


def test_serve_raises_its_open_files_limit_to_the_hard_limit() -> None:
    """Every connection is a file: a server started with a low soft limit raises it."""
    argv = ["bash", "-c", 'ulimit -Sn 256; exec "$0" -m pybroadway serve "$@"', sys.executable]
    with running(argv) as server:
        server.wait_logged(" serves off_broadway_otp_distribution_receiver")
        limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
        soft, hard = next(line.split()[3:5] for line in limits.splitlines()
                          if line.startswith("Max open files"))
        assert soft == hard != "256"
        server.stop()


def test_serve_pull_mode_for_the_library_last_version() -> None:
    """``serve --mode pull --request-atom pull_message``: a client of the library's last version
    (``:pull_message`` answered with ``{:send_message, data}``) is served."""
    from tests.otp_distribution.helpers import ELIXIR_CLIENT

    argv = [sys.executable, "-m", "pybroadway", "serve", "--mode", "pull",
            "--request-atom", "pull_message", "--pull-interval", "600"]
    with running(argv) as server:
        server.wait_logged(" serves off_broadway_otp_distribution_receiver in pull mode")
        with BeamPeer.elixir(epmd_port=server.epmd_port, cookie=COOKIE) as peer:
            peer.wait_started()
            assert decode(peer.eval(f'Node.connect(:"{server.sname}")')) is True
            peer.eval(ELIXIR_CLIENT)
            peer.eval("PbClient.start(:global, :last)")
            server.wait_logged("[INFO] handled: ", 2000)
            handled, failed, _dropped = server.stop()
        assert handled >= 2000 and failed == 0
        # the client answers :pull_message only; the requests are DEBUG lines, the answers INFO
        assert server.count("[INFO] send_message: ") >= 2000
        assert server.count("pull_message: ") == 0
