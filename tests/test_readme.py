"""The README's first commands, as written: the install builds the compiled codec, the server
runs from a fresh clone even with nothing installed and no Erlang (embedded EPMD, a cookie file
created like erl does; it says then what builds the codec), and the test command is what CI
runs."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from pybroadway.erldist import Node, default_cookie
from pybroadway.otp_distribution import Client
from pybroadway.term import Atom
from testkit.peers import free_port, unique_name, wait_for_port
from testkit.wait import eventually_async

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The code blocks of the README's "Two commands" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```\n(.*?)```", section, re.S)]


def test_the_first_command_installs_pybroadway_with_its_compiled_codec() -> None:
    """An editable install builds the compiled codec in the clone (setup.py), so the server
    command after it, and every other command run in the clone, use it."""
    install = readme_commands()[0]
    assert "python3 -m venv .venv" in install and "pip install -e '.[metrics]'" in install
    assert "ext_modules" in (ROOT / "setup.py").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    _install, _server, tests = readme_commands()
    assert tests == "bash scripts/test.sh"
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


async def test_the_server_command_works_from_a_fresh_clone(tmp_path: Path) -> None:
    command = shlex.split(readme_commands()[1])
    assert command[:3] == ["python3", "-m", "pybroadway"]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    home = tmp_path / "home"
    home.mkdir()
    epmd_port = free_port()
    env = {**os.environ, "HOME": str(home), "ERL_EPMD_PORT": str(epmd_port),
           "PATH": "/nonexistent"}  # no Erlang program is needed
    env.pop("PYTHONPATH", None)
    server = subprocess.Popen([sys.executable, *command[1:]], cwd=clone, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(epmd_port)
        cookie = default_cookie(home / ".erlang.cookie")  # the one the server created
        async with Node(f"{unique_name('readme')}@localhost", cookie=cookie,
                        epmd_port=epmd_port) as node:
            # the server registers right after its EPMD is up
            await eventually_async(lambda: node.connect("server@localhost"))
            client = await Client.start(node)
            for _ in range(3):
                client.push_message("How are you?")
            # a call after the casts: its reply means the receiver has taken them
            assert await node.call(client.receiver, Atom("unregister")) == Atom("ok")
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0
    assert out.strip().splitlines()[-1] == "handled 3, failed 0, dropped 0"
    # Not installed, the clone has no compiled codec: the log says what builds it, once.
    assert err.count("term codec: pure Python") == 1
    assert (f"the compiled codec is not built in {clone.resolve()}: `pip install -e .` there "
            f"builds it") in err
