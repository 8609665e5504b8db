"""Stopping ``pybroadway serve`` as users do, with real signals on a real terminal: the first
Ctrl-C drains (the status line says how much is left), a second stops at once; a Ctrl-C while
it starts is one line; and a handler's ``print`` never lands on the status line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pybroadway.erldist import Node
from pybroadway.otp_distribution import DEFAULT_NAME, Client
from testkit.peers import free_port, unique_name
from testkit.processes import python_env
from testkit.wait import eventually_async
from tests.test_serve_terminal import COOKIE, Terminal, push, session

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = """
import asyncio

from pybroadway.pipeline import Pipeline

class Stuck(Pipeline):
    async def handle_message(self, processor, message, context):
        await asyncio.sleep(3600)  # a handler that does not finish while we wait
        return message

class Printing(Pipeline):
    def handle_message(self, processor, message, context):
        print(f"printed {message.data}", flush=True)
        return message
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "mypipeline.py").write_text(PIPELINE)
    return tmp_path


def serve(pipeline: str, sname: str, epmd_port: int) -> list[str]:
    """This checkout's ``pybroadway serve`` (the user's module found in the current folder)."""
    return [sys.executable, "-m", "pybroadway", "serve", "--pipeline", f"mypipeline:{pipeline}",
            "--quiet", "--cookie", COOKIE, "--sname", sname, "--epmd-port", str(epmd_port)]


def env() -> dict[str, str]:
    return python_env(PYTHONPATH=str(ROOT))


async def test_a_second_ctrl_c_while_draining_stops_at_once(project: Path) -> None:
    epmd_port = free_port()
    sname = f"{unique_name('cut')}@localhost"
    terminal = Terminal()
    with session(terminal, serve("Stuck", sname, epmd_port), project, env()) as server:
        terminal.wait_for(r"serves off_broadway_otp_distribution_receiver")
        await push(epmd_port, sname, 10)
        terminal.wait_for(r"0 handled +0 failed")
        server.send_signal(signal.SIGINT)
        terminal.wait_for(r"draining 10 messages \(Ctrl-C again to stop now\)")
        server.send_signal(signal.SIGINT)
        terminal.wait_for(r"handled 0, failed 10, dropped 0")
        assert server.wait(10) == 0
    said = re.findall(r"\[(\w+)\] (stopped at once: .*?)\r?\n", terminal.output)
    assert said == [("WARNING", "stopped at once: 10 messages left acknowledged as failed")]
    assert "Traceback" not in terminal.output


def rendered(output: str, needle: str) -> list[str]:
    """The terminal lines holding ``needle`` as they show: what a line erase (``\\r\\x1b[K``)
    erased is gone."""
    return [line.rsplit("\x1b[K", 1)[-1].rstrip("\r") for line in output.split("\n")
            if needle in line]


async def test_a_handlers_print_starts_a_line_of_its_own(project: Path) -> None:
    epmd_port = free_port()
    sname = f"{unique_name('print')}@localhost"
    terminal = Terminal()
    with session(terminal, serve("Printing", sname, epmd_port), project, env()) as server:
        terminal.wait_for(r"serves off_broadway_otp_distribution_receiver")
        async with Node(f"{unique_name('tty')}@localhost", cookie=COOKIE,
                        epmd_port=epmd_port) as node:
            await eventually_async(lambda: node.connect(sname))
            client = await Client.start(node, receiver=(DEFAULT_NAME, sname))
            # The client's registration was logged; the status line is drawn again after it.
            terminal.wait_for(r"msg/s +0 handled +0 failed +0 buffered +1 client")
            for number in range(3):
                client.push_message(number)
            # (the client stays registered: its unregistering would be a log line, which
            # takes the status line off by itself)
            await asyncio.to_thread(terminal.wait_for, r"printed 2")
        terminal.wait_for(r"msg/s +3 handled")  # and drawn again, under the prints
        server.send_signal(signal.SIGTERM)
        terminal.wait_for(r"handled 3, failed 0, dropped 0")
        assert server.wait(10) == 0
    assert rendered(terminal.output, "printed") == ["printed 0", "printed 1", "printed 2"]


def test_ctrl_c_while_it_starts_is_one_line(project: Path) -> None:
    """SIGINT while the command is still importing its modules (the moment is found by
    watching CPython's import log, ``-X importtime``)."""
    argv = [sys.executable, "-X", "importtime", *serve("Stuck", "early@localhost",
                                                       free_port())[1:]]
    process = subprocess.Popen(argv, cwd=project, env=env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if line.rstrip().endswith(" pybroadway.erldist"):  # imported by pybroadway.cli
                os.kill(process.pid, signal.SIGINT)
                break
        rest = process.stderr.read()
        code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    said = [line for line in rest.splitlines() if not line.startswith("import time:")]
    assert "Traceback" not in rest, rest
    assert (code, said) in ((130, ["pybroadway: interrupted (Ctrl-C)"]),
                            (130, ["pybroadway serve: interrupted (Ctrl-C)"])), (code, said)
