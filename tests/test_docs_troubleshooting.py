"""The troubleshooting guide's bad command lines, run as shown: each prints the line the guide
shows, on stderr, with exit code 2, before any node starts."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.pages import page, section
from testkit.peers import free_port
from testkit.processes import python_env

SHOWN = re.findall(r"```console\n\$ (pybroadway .*)\n(.*)\n```",
                   section(page("troubleshooting"), "Bad command lines and files (exit code 2)"))
#: What the guide's commands read, as the guide describes them.
FILES = {
    "bad.toml": 'pipeline = "json:JSONDecoder"\n[batchers.db]\nbatch_sise = 3\n',
    "broken.py": "def broken(:\n",
    "bad.conf": '[{server, [{certfile, "a.pem"}, {reuse_sessions, true}]}].\n',
}


def test_the_guide_shows_the_bad_command_lines() -> None:
    assert len(SHOWN) >= 10


@pytest.mark.parametrize(("command", "line"), SHOWN, ids=[command for command, _ in SHOWN])
def test_each_bad_command_line_prints_what_the_guide_shows(
        command: str, line: str, tmp_path: Path) -> None:
    here = tmp_path / "here"
    here.mkdir()
    for name, text in FILES.items():
        (here / name).write_text(text)
    ran = subprocess.run([sys.executable, "-m", *shlex.split(command)], cwd=here,
                         env=python_env(ERL_EPMD_PORT=str(free_port())),
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.replace(str(here), "/tmp/here").strip() == line
