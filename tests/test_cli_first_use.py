"""What a new user meets on the command line (issue 22): one-line errors for the user's own
mistakes (a missing home, a broken module, a config file elsewhere), and the conventions of a
command line (``--version``, help with no command, ``--log-level``)."""

from __future__ import annotations

import os
import re
import socket
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
                         "--proto-dist": True, "--ssl-dist-optfile": True,
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


# -- the user's module ------------------------------------------------------------------------

def test_a_syntax_error_in_the_pipeline_module_is_its_file_line_and_message(
        tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("from pybroadway.pipeline import Pipeline\n\n"
                                        "class Broken(Pipeline:\n    pass\n")
    out = pybroadway("serve", "--pipeline", "broken:Broken", "--epmd-port", str(free_port()),
                     cwd=tmp_path, env=env_with())
    line = only_line(out, code=2)
    assert line.startswith(f"pybroadway serve: --pipeline broken:Broken: cannot import it: "
                           f"{tmp_path / 'broken.py'}, line 3: "), line


CONFIG = 'pipeline = "beside_config:Beside"\n'
BESIDE = """
from pybroadway.pipeline import Pipeline

class Beside(Pipeline):
    def handle_message(self, processor, message, context):
        return message
"""


def test_config_from_another_directory_finds_the_modules_beside_it(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "pipeline.toml").write_text(CONFIG)
    (project / "beside_config.py").write_text(BESIDE)
    sname = f"{unique_name('beside')}@localhost"
    process = WatchedProcess([sys.executable, "-m", "pybroadway", "serve", "--config",
                              str(project / "pipeline.toml"), "--cookie", "c", "--sname", sname,
                              "--epmd-port", str(free_port())], cwd=elsewhere, env=env_with())
    try:
        process.wait_line(" serves off_broadway_otp_distribution_receiver")
    finally:
        process.kill()


def test_a_module_not_found_says_where_modules_are_looked_for(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "pipeline.toml").write_text(CONFIG)  # and no beside_config.py
    out = pybroadway("serve", "--config", str(project / "pipeline.toml"),
                     "--epmd-port", str(free_port()), cwd=elsewhere, env=env_with())
    line = only_line(out, code=2)
    assert line.endswith(f"cannot import it (No module named 'beside_config'; modules are "
                         f"looked for in the current directory ({elsewhere}), beside the "
                         f"configuration file ({project}) and on PYTHONPATH)"), line


# -- one line, as serve's ---------------------------------------------------------------------

def test_the_walkthrough_server_with_a_name_taken_is_one_line() -> None:
    epmd_port = free_port()
    sname = f"{unique_name('taken')}@localhost"
    first = WatchedProcess([sys.executable, "-m", "pybroadway", "serve", "--cookie", "c",
                            "--sname", sname, "--epmd-port", str(epmd_port)], cwd=ROOT)
    try:
        first.wait_line(" serves off_broadway_otp_distribution_receiver")
        out = subprocess.run([sys.executable, "examples/broadway.py", "--cookie", "c", "--sname",
                              sname, "--epmd-port", str(epmd_port)], cwd=ROOT, text=True,
                             capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    finally:
        first.kill()
    lines = [line for line in out.stderr.splitlines() if "[INFO]" not in line]
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines == [f"broadway.py: the name {sname.split('@')[0]} is taken: another node "
                     f"registered it with epmd at 127.0.0.1:{epmd_port}; choose another with "
                     f"--sname"], out.stderr


@pytest.mark.parametrize("command", [["serve", "--cookie", "c"], ["ping", "a@localhost"]],
                         ids=lambda command: command[0])
def test_a_port_held_by_something_else_than_an_epmd_says_so(command: list[str]) -> None:
    """After 2 s of silence (an EPMD answers at once), not the 5 s of a connection's wait."""
    with socket.socket() as other:  # it accepts connections, and never says a word
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        out = pybroadway(*command, "--sname", f"{unique_name('other')}@localhost",
                         "--epmd-port", str(port))
    assert only_line(out) == (
        f"pybroadway {command[0]}: what listens at 127.0.0.1:{port} is not an EPMD (it did "
        f"not answer the registration within 2s): start one with `pybroadway epmd serve`, or "
        f"check ERL_EPMD_PORT (or --epmd-port)")
