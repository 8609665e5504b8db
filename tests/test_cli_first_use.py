"""What a new user meets on the command line (issue 22): one-line errors for the user's own
mistakes (a missing home, a broken module, a config file elsewhere), and the conventions of a
command line (``--version``, help with no command, ``--log-level``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.peers import free_port, unique_name
from testkit.processes import WatchedProcess

ROOT = Path(__file__).resolve().parents[1]


def pybroadway(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pybroadway", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def only_line(out: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert out.returncode == code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def env_with(**changes: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(changes)
    env["PYTHONPATH"] = str(ROOT)  # this checkout's package, from any directory
    return env


@pytest.mark.parametrize("home", ["missing", "not a directory"])
def test_a_home_without_a_cookie_file_says_to_give_one(home: str, tmp_path: Path) -> None:
    folder = tmp_path / "home"
    if home == "not a directory":  # (a directory's mode would not stop root, who runs CI)
        folder.write_text("")
    out = pybroadway("serve", "--sname", f"{unique_name('home')}@localhost",
                     "--epmd-port", str(free_port()), env=env_with(HOME=str(folder)))
    line = only_line(out)
    assert line.startswith(f"pybroadway serve: cannot create the cookie file "
                           f"{folder / '.erlang.cookie'} (")
    assert line.endswith("give the cookie with --cookie, or set HOME to a writable directory")


# -- conventions --------------------------------------------------------------------------------

def test_version_names_the_codec_that_runs() -> None:
    out = pybroadway("--version")
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"pybroadway \d+\.\d+\.\d+ \((native|python) codec\)\n", out.stdout)


def test_no_command_prints_the_help_as_a_usage_error() -> None:
    out = pybroadway()
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.startswith("usage: pybroadway")
    assert "serve a pipeline to BEAM clients" in out.stderr  # the help, not only the usage


def test_ping_help_describes_every_option() -> None:
    out = pybroadway("ping", "--help")
    assert out.returncode == 0, out.stderr
    entries = re.split(r"\n  (?=-)", out.stdout.split("options:")[1])
    described = {entry.split()[0].rstrip(","): len(entry.split()) > 2 for entry in entries
                 if entry.strip()}
    assert described == {"-h": True, "--sname": True, "--cookie": True, "--epmd-port": True,
                         "--log-level": True}, out.stdout
    assert "name@host" in out.stdout  # the node argument


@pytest.mark.parametrize("command", [
    ["serve", "--cookie", "c", "--sname", "SNAME"],
    ["ping", "nobody@localhost", "--cookie", "c"],
    ["epmd", "serve", "--port", "EPMD_PORT"],
], ids=lambda command: command[0])
def test_log_level_debug_shows_debug_lines(command: list[str]) -> None:
    epmd_port = str(free_port())
    argv = [{"SNAME": f"{unique_name('lvl')}@localhost", "EPMD_PORT": epmd_port}.get(a, a)
            for a in command]
    if "--port" not in argv:
        argv += ["--epmd-port", epmd_port]
    process = WatchedProcess([sys.executable, "-m", "pybroadway", *argv, "--log-level", "DEBUG"],
                             cwd=ROOT)
    try:
        process.wait_line("[DEBUG]")
    finally:
        process.kill()
