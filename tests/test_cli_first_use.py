"""What a new user meets on the command line (issue 22): one-line errors for the user's own
mistakes (a missing home, a broken module, a config file elsewhere), and the conventions of a
command line (``--version``, help with no command, ``--log-level``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.peers import free_port, unique_name

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
