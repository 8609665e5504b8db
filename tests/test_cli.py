"""The ``pybroadway`` command line as users run it: ``python -m pybroadway …``."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.peers import free_port

ROOT = Path(__file__).resolve().parents[1]


def pybroadway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pybroadway", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("command", [
    ["--help"], ["serve", "--help"], ["ping", "--help"], ["epmd", "--help"],
    ["epmd", "serve", "--help"], ["epmd", "names", "--help"], ["epmd", "port-please", "--help"],
    ["epmd", "kill", "--help"],
], ids=" ".join)
def test_help_exits_0(command: list[str]) -> None:
    out = pybroadway(*command)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: pybroadway")


def test_epmd_without_an_action_is_a_usage_error() -> None:
    out = pybroadway("epmd")
    assert out.returncode == 2
    assert "serve,names,port-please,kill" in out.stderr


@pytest.mark.parametrize("action", [["names"], ["port-please", "nobody"], ["kill"]])
def test_epmd_unreachable_is_one_line(action: list[str]) -> None:
    port = free_port()  # nothing listens there
    out = pybroadway("epmd", *action, "--port", str(port))
    assert out.returncode == 1
    assert out.stderr.startswith(f"pybroadway epmd: cannot reach epmd at 127.0.0.1:{port}: ")
    assert len(out.stderr.splitlines()) == 1, out.stderr


def test_epmd_serve_on_a_taken_port_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = pybroadway("epmd", "serve", "--port", str(port))
    assert out.returncode == 1
    assert out.stderr.startswith("pybroadway epmd: ") and "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr


@pytest.mark.parametrize(("spec", "why"), [
    ("nosuch_module_here:X", "cannot import it (No module named 'nosuch_module_here'; modules "
                             f"are looked for in the current directory ({ROOT}) and on "
                             "PYTHONPATH)"),
    ("os:path", "it is not a subclass of pybroadway.pipeline.Pipeline"),
    ("nocolon", "expected an import path module:Class"),
])
def test_a_pipeline_that_does_not_load_is_a_usage_error(spec: str, why: str) -> None:
    """As a bad flag or configuration file: one line, with the command's prefix, exit code 2."""
    out = pybroadway("serve", "--pipeline", spec, "--epmd-port", str(free_port()))
    assert (out.returncode, out.stderr) == (2, f"pybroadway serve: --pipeline {spec}: {why}\n")


@pytest.mark.parametrize("spec", ["e@a@h:max_demand=1000000000", "e@a@h:max_demand=x", "e@h"])
def test_a_bad_subscribe_is_one_line_and_exit_code_2(spec: str) -> None:
    out = pybroadway("serve", "--subscribe", spec)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and f"bad --subscribe {spec!r}" in out.stderr
