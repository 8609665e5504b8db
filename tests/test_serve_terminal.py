"""``pybroadway serve`` as a user runs it in a terminal: the installed command finds a pipeline
module in the current directory, and the status line is drawn only while the server is the
terminal's foreground job, with failures counted on it."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pybroadway.erldist import Node
from pybroadway.otp_distribution import DEFAULT_NAME, Client
from pybroadway.term import Atom
from testkit.peers import free_port, unique_name, wait_for_port
from testkit.processes import python_env
from testkit.wait import eventually_async

COOKIE = "terminal_cookie"
PIPELINE = """
from pybroadway.pipeline import Pipeline

class Halves(Pipeline):
    def handle_message(self, processor, message, context):
        if message.data % 2:
            raise ValueError(f"odd: {message.data}")
        return message
"""


def installed_command() -> str:
    """The ``pybroadway`` console script of the interpreter running the tests."""
    command = Path(sys.executable).parent / "pybroadway"
    assert command.exists(), f"{command} is missing: install the package (pip install -e .)"
    return str(command)


class Terminal:
    """A pseudo-terminal whose output is collected by a thread as it comes."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.output = ""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the last writer closed
                chunk = b""
            with self._changed:
                self.output += chunk.decode(errors="replace")
                self._changed.notify_all()
            if not chunk:
                return

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while (found := re.search(pattern, self.output)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"{pattern!r} not shown within {timeout}s:\n"
                                         + self.output[-3000:])
                self._changed.wait(left)
            return found

    def close(self) -> None:
        os.close(self.slave)
        self._reader.join(5)
        os.close(self.master)


def controlling_terminal() -> None:
    """In the child: a session of its own whose controlling terminal is its stdin."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@contextmanager
def session(terminal: Terminal, argv: list[str], cwd: Path, env: dict[str, str] | None = None
            ) -> Iterator[subprocess.Popen[bytes]]:
    leader = subprocess.Popen(argv, cwd=cwd, env=env or python_env(), stdin=terminal.slave,
                              stdout=terminal.slave, stderr=terminal.slave,
                              preexec_fn=controlling_terminal)
    try:
        yield leader
    finally:
        if leader.poll() is None:
            leader.kill()
        leader.wait(10)
        terminal.close()


async def push(epmd_port: int, server: str, count: int) -> None:
    async with Node(f"{unique_name('tty')}@localhost", cookie=COOKIE,
                    epmd_port=epmd_port) as node:
        await eventually_async(lambda: node.connect(server))
        client = await Client.start(node, receiver=(DEFAULT_NAME, server))
        for number in range(count):
            client.push_message(number)
        # an answered call after the casts: they have left
        assert await node.call(client.receiver, Atom("unregister")) == Atom("ok")


def serve_argv(sname: str, epmd_port: int) -> list[str]:
    return [installed_command(), "serve", "--pipeline", "mypipeline:Halves", "--quiet",
            "--cookie", COOKIE, "--sname", sname, "--epmd-port", str(epmd_port)]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder holding the user's ``mypipeline.py``, and nothing on PYTHONPATH."""
    (tmp_path / "mypipeline.py").write_text(PIPELINE)
    return tmp_path


async def test_foreground_serve_finds_the_pipeline_in_the_current_folder_and_shows_failures(
        project: Path) -> None:
    epmd_port = free_port()
    sname = f"{unique_name('fg')}@localhost"
    terminal = Terminal()
    with session(terminal, serve_argv(sname, epmd_port), project) as server:
        terminal.wait_for(r"serves off_broadway_otp_distribution_receiver")
        await push(epmd_port, sname, 10)
        terminal.wait_for(r"msg/s +5 handled +5 failed")
        server.send_signal(signal.SIGTERM)
        terminal.wait_for(r"handled 5, failed 5, dropped 0")
        assert server.wait(10) == 0


async def test_no_status_line_while_serve_runs_in_the_background(project: Path) -> None:
    epmd_port = free_port()
    sname = f"{unique_name('bg')}@localhost"
    command = " ".join(serve_argv(sname, epmd_port))
    terminal = Terminal()
    # An interactive shell's `serve &`: job control puts the job in a process group of its
    # own, and the shell's stays the terminal's foreground group.
    script = f"set -m; {command} </dev/null & echo \"job $!\"; wait"
    with session(terminal, ["bash", "-c", script], project) as shell:
        pid = int(terminal.wait_for(r"job (\d+)")[1])
        terminal.wait_for(r"serves off_broadway_otp_distribution_receiver")
        wait_for_port(epmd_port)
        await push(epmd_port, sname, 10)
        # Absence can only be watched for: two ticks of the status line's clock.
        await asyncio.sleep(2.5)
        os.kill(pid, signal.SIGTERM)
        terminal.wait_for(r"handled 5, failed 5, dropped 0")
        assert shell.wait(10) == 0
    assert "msg/s" not in terminal.output
