"""Common mistakes on the command line give one clear line, exit code 1 and no traceback: no
server, a node name taken, no EPMD, a wrong cookie; ``answer`` says when no pull request comes;
Ctrl-C stops the server and the client quietly. Python nodes only: no Erlang is needed."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from testkit.peers import SystemEpmd, free_port, unique_name
from testkit.processes import WatchedProcess

ROOT = Path(__file__).resolve().parents[1]
COOKIE = "errors_cookie"
EPMD_HINT = "start one with `pybroadway epmd serve`, or check ERL_EPMD_PORT (or --epmd-port)"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def client(epmd_port: int, *args: str, cookie: str = COOKIE) -> list[str]:
    """``examples/client.py`` with its node on ``epmd_port``."""
    return ["examples/client.py", "--cookie", cookie, "--epmd-port", str(epmd_port),
            "--sname", f"{unique_name('cli')}@localhost", *args]


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The failure's only line on stderr (exit code 1, no traceback)."""
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


@contextmanager
def running(argv: list[str], env: dict[str, str] | None = None) -> Iterator[WatchedProcess]:
    """``python ARGV`` from the repository's root, stopped by its pid at the end."""
    process = WatchedProcess([sys.executable, *argv], cwd=ROOT, env=env)
    try:
        yield process
    finally:
        process.kill()


def interrupt(process: WatchedProcess) -> tuple[int, str, str]:
    """SIGINT (Ctrl-C); the exit code, stdout and stderr."""
    code = process.terminate(signal.SIGINT)
    return code, "\n".join(process.stdout), "\n".join(process.stderr)


@contextmanager
def server(*options: str) -> Iterator[tuple[str, int]]:
    """``pybroadway serve`` with its embedded EPMD on a port of its own: (its name, the port)."""
    epmd_port = free_port()
    sname = f"{unique_name('srv')}@localhost"
    with running(["-m", "pybroadway", "serve", "--cookie", COOKIE, "--sname", sname,
                  "--epmd-port", str(epmd_port), *options]) as process:
        process.wait_line(" serves off_broadway_otp_distribution_receiver")
        yield sname, epmd_port
        code, _, stderr = interrupt(process)
        assert code == 0 and "Traceback" not in stderr, stderr


@contextmanager
def not_an_epmd() -> Iterator[int]:
    """A port held by a socket that does not listen: no EPMD answers there, none can start."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


# -- no server ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["push", "hi"], ["--global", "push", "hi"], ["answer"]],
                         ids=" ".join)
def test_client_without_a_server(command: list[str]) -> None:
    epmd_port = free_port()  # nothing there: the client starts an embedded EPMD, alone
    line = one_line(run(*client(epmd_port, *command)))
    assert line == (f"client.py: server@localhost is not registered with epmd at "
                    f"localhost:{epmd_port}: is it running, with this EPMD?")


def test_ping_without_a_server() -> None:
    out = run("-m", "pybroadway", "ping", "server@localhost", "--epmd-port", str(free_port()))
    assert out.returncode == 1 and out.stderr == ""
    assert out.stdout.startswith("pang (server@localhost is not registered with epmd at ")


# -- the node name taken ------------------------------------------------------------------------

def test_serve_and_client_with_a_name_taken() -> None:
    with server() as (sname, epmd_port):
        taken = ("the name {} is taken: another node registered it with epmd at "
                 f"127.0.0.1:{epmd_port}; choose another with --sname")
        out = run("-m", "pybroadway", "serve", "--cookie", COOKIE, "--sname", sname,
                  "--epmd-port", str(epmd_port))
        assert one_line(out) == "pybroadway serve: " + taken.format(sname.split("@")[0])
        out = run("examples/client.py", "--cookie", COOKIE, "--epmd-port", str(epmd_port),
                  "--sname", sname, "--server", sname, "push")
        assert one_line(out) == "client.py: " + taken.format(sname.split("@")[0])


# -- no EPMD ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "prefix"), [
    (["-m", "pybroadway", "ping", "server@localhost", "--epmd-port"], "pybroadway ping"),
    (["-m", "pybroadway", "serve", "--epmd-port"], "pybroadway serve"),
    (["examples/client.py", "--epmd-port"], "client.py"),
], ids=["ping", "serve", "client.py"])
def test_no_epmd_and_none_can_start(argv: list[str], prefix: str) -> None:
    """Every command starts an embedded EPMD when none answers; when the port is held by
    something else it cannot, and says what to do."""
    with not_an_epmd() as port:
        out = run(*argv, str(port), *(["push"] if prefix == "client.py" else []))
    line = one_line(out)
    assert line.startswith(f"{prefix}: no epmd answers at 127.0.0.1:{port}, and none can be "
                           f"started there: ")
    assert line.endswith(EPMD_HINT)


def test_no_epmd_on_the_server_host() -> None:
    """The embedded EPMD serves this host only: a node elsewhere needs an EPMD there."""
    epmd_port = free_port()
    out = run("-m", "pybroadway", "ping", "server@127.0.0.2", "--epmd-port", str(epmd_port))
    assert out.returncode == 1
    assert out.stdout.startswith(f"pang (cannot reach epmd at 127.0.0.2:{epmd_port}: ")
    assert out.stdout.rstrip().endswith(EPMD_HINT + ")")
    line = one_line(run(*client(epmd_port, "--server", "server@127.0.0.2", "push")))
    assert line.startswith(f"client.py: cannot reach epmd at 127.0.0.2:{epmd_port}: ")


# -- a wrong cookie -----------------------------------------------------------------------------

def test_wrong_cookie() -> None:
    with server() as (sname, epmd_port):
        out = run("-m", "pybroadway", "ping", sname, "--cookie", "wrong",
                  "--epmd-port", str(epmd_port))
        assert (out.returncode, out.stdout) == (
            1, f"pang ({sname} refused the handshake: is the cookie right?)\n")
        line = one_line(run(*client(epmd_port, "--server", sname, "push", cookie="wrong")))
        assert line == f"client.py: {sname} refused the handshake: is the cookie right?"
        out = run("-m", "pybroadway", "ping", sname, "--cookie", COOKIE,
                  "--epmd-port", str(epmd_port))
        assert (out.returncode, out.stdout) == (0, "pong\n")


# -- answer, and Ctrl-C -------------------------------------------------------------------------

def test_answer_to_a_push_mode_server_says_why_nothing_comes() -> None:
    with server("--mode", "push") as (sname, epmd_port), \
            running(client(epmd_port, "--server", sname, "answer")) as answering:
        line = answering.wait_line("no pull request")
        assert line.endswith(f"[WARNING] no pull request from {sname} in 5 s: is it in pull "
                             "mode (`serve --mode pull`)?")
        code, stdout, stderr = interrupt(answering)
        assert code == 0 and "Traceback" not in stderr, stderr
        assert stdout.splitlines()[-1] == "answered 0"


@pytest.mark.parametrize("program", [["-m", "pybroadway", "serve"], ["examples/broadway.py"]],
                         ids=["serve", "examples/broadway.py"])
def test_ctrl_c_stops_server_and_client_quietly(program: list[str], epmd: SystemEpmd) -> None:
    """Ctrl-C on a pull-mode server while a client answers, then on the client (which lost its
    server): both exit 0, with no traceback. (An EPMD of their own: one embedded in the server
    would go with it, and the client with its registration, before its Ctrl-C.)"""
    epmd_port = epmd.port
    sname = f"{unique_name('srv')}@localhost"
    with running([*program, "--mode", "pull", "--quiet", "--cookie", COOKIE, "--sname", sname,
                  "--epmd-port", str(epmd_port)]) as serving:
        serving.wait_line(" serves off_broadway_otp_distribution_receiver in pull mode")
        with running(client(epmd_port, "--server", sname, "-v", "answer")) as answering:
            answering.wait_line("client: registered with")
            code, stdout, stderr = interrupt(serving)
            assert code == 0 and "Traceback" not in stderr, stderr
            assert stdout.startswith("handled ")
            answering.wait_line("down (:shutdown); reconnecting")
            code, stdout, stderr = interrupt(answering)
            assert code == 0 and "Traceback" not in stderr, stderr
            assert stdout.splitlines()[-1].startswith("answered ")
