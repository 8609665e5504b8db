"""The Python blocks of the README and the guides (docs/guides), as a user runs them: each is a
file that compiles with no undefined name, and each runs as written (with its node names, on a
private EPMD), printing what the page says it prints.

A block whose first line is ``# NAME.py`` is that file. The blocks that need a server or a peer
are run by a test of their own below, with what they need; every other one runs alone, and
must exit 0 (a ``test_*.py`` block under pytest); where the page shows what it prints (a
``text`` block after a line ending "prints ...:"), it prints those lines.
"""

from __future__ import annotations

import ast
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from pybroadway.erldist import Node
from pybroadway.otp_distribution import Client
from pybroadway.term import Atom
from testkit.pages import ROOT, blocks, page, pages, section
from testkit.peers import free_port, unique_name
from testkit.processes import WatchedProcess, python_env
from testkit.wait import eventually_async

BIN = Path(sys.executable).parent
PYTHON_BLOCKS = [(name, block) for name, text in pages().items()
                 for block in blocks(text, "python")]
#: The blocks the tests below run with a server or a peer.
RUN_BY_A_TEST = {"client.py", "echo.py", "stages.py", "mypipeline.py", "myserver.py"}


def file_name(block: str) -> str | None:
    """``NAME.py`` of a block whose first line is ``# NAME.py``."""
    found = re.match(r"# (\S+\.(?:py|toml))\n", block)
    return found.group(1) if found else None


def named_block(name: str) -> str:
    """The block of the README or a guide whose first line is ``# name``."""
    found = [block for text in pages().values()
             for block in blocks(text, "python") + blocks(text, "toml")
             if file_name(block) == name]
    assert len(found) == 1, f"the pages have {len(found)} blocks named {name}"
    return found[0]


def shown_output(text: str, block: str) -> list[str] | None:
    """The lines the page says ``block`` prints, if it says."""
    after = text.split(block + "```\n", 1)[1]
    found = re.match(r"\n[^\n`]*prints[^\n]*:\n\n```text\n(.*?)```", after, re.S)
    return found.group(1).splitlines() if found else None


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_each_python_block_is_a_file_that_compiles_and_names_only_what_it_defines(
        index: int) -> None:
    where, block = PYTHON_BLOCKS[index]
    compile(block, f"{where} block {index}", "exec")  # no await outside async def
    checked = subprocess.run(
        [str(BIN / "ruff"), "check", "--isolated", "--select", "F", "--stdin-filename",
         f"block{index}.py", "-"], input=block, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout


STANDALONE = [(where, block) for where, block in PYTHON_BLOCKS
              if file_name(block) not in RUN_BY_A_TEST]


@pytest.mark.parametrize("index", range(len(STANDALONE)))
def test_each_other_python_block_runs_and_prints_what_its_page_shows(
        index: int, tmp_path: Path) -> None:
    where, block = STANDALONE[index]
    name = file_name(block) or "block.py"
    (tmp_path / name).write_text(block)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
            "asyncio_mode=auto", name] if name.startswith("test_") else [sys.executable, name]
    ran = subprocess.run(argv, cwd=tmp_path, env=python_env(ERL_EPMD_PORT=str(free_port())),
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    shown = shown_output(page(where), block)
    if shown is not None:  # the order of lines from concurrent stages may differ
        assert sorted(ran.stdout.splitlines()) == sorted(shown)


@pytest.fixture
def epmd_port() -> int:
    return free_port()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The pipeline guide's files, written where a user writes them."""
    for name in ("mypipeline.py", "pipeline.toml", "myserver.py"):
        (tmp_path / name).write_text(named_block(name))
    return tmp_path


def run(argv: list[str], cwd: Path, epmd_port: int) -> WatchedProcess:
    return WatchedProcess(argv, cwd=cwd, env=python_env(ERL_EPMD_PORT=str(epmd_port)))


@asynccontextmanager
async def a_node(epmd_port: int) -> AsyncIterator[Node]:
    async with Node(f"{unique_name('readme')}@localhost", cookie="secret",
                    epmd_port=epmd_port) as node:
        yield node


async def push_orders(epmd_port: int, count: int) -> None:
    async with a_node(epmd_port) as node:
        await eventually_async(lambda: node.connect("server@localhost"))
        client = await Client.start(node, server="server@localhost")
        for number in range(1, count + 1):
            client.push_message(f'{{"id": {number}, "amount": 10}}')


def printed_by_the_pipeline() -> list[str]:
    text = section(page("pipelines"), "A pipeline of your own")
    return re.findall(r"it\nprints:\n\n```\n(.*?)```", text, re.S)[0].splitlines()


async def test_the_python_client_block_pushes_to_serve(tmp_path: Path, epmd_port: int) -> None:
    (tmp_path / "client.py").write_text(named_block("client.py"))
    server = run([sys.executable, "-m", "pybroadway", "serve", "--cookie", "secret"], ROOT,
                 epmd_port)
    try:
        server.wait_logged(" serves off_broadway_otp_distribution_receiver")
        client = subprocess.run([sys.executable, "client.py"], cwd=tmp_path,
                                env=python_env(ERL_EPMD_PORT=str(epmd_port)),
                                capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr
        server.wait_logged('handled: %Broadway.Message{data: "How are you?"')
        assert server.terminate() == 0
    finally:
        server.kill()
    assert server.stdout[-1] == "handled 1, failed 0, dropped 0"


def test_the_python_stages_block_prints_the_batches_its_comment_shows(
        tmp_path: Path, epmd_port: int) -> None:
    block = named_block("stages.py")
    shown = re.findall(r"\.emit\(.*\)  # (.*)\n", block)[0]
    (tmp_path / "stages.py").write_text(block)
    stages = subprocess.run([sys.executable, "stages.py"], cwd=tmp_path,
                            env=python_env(ERL_EPMD_PORT=str(epmd_port)),
                            capture_output=True, text=True, timeout=60)
    assert stages.returncode == 0, stages.stderr
    assert " ".join(stages.stdout.splitlines()) == shown


async def test_serve_with_the_config_file_prints_what_the_readme_shows(
        project: Path, epmd_port: int) -> None:
    command = next(line for line in page("pipelines").splitlines()
                   if line.startswith("$ pybroadway serve --config"))
    argv = shlex.split(command[2:])
    server = run([str(BIN / argv[0]), *argv[1:]], project, epmd_port)
    try:
        server.wait_logged(" serves off_broadway_otp_distribution_receiver")
        await push_orders(epmd_port, 250)
        expected = printed_by_the_pipeline()
        server.wait_until(lambda: len(server.stdout) >= len(expected), "three batches")
        assert server.terminate() == 0
    finally:
        server.kill()
    assert server.stdout == [*expected, "handled 250, failed 0, dropped 0"]


async def test_the_program_of_your_own_runs_the_same_pipeline(project: Path,
                                                              epmd_port: int) -> None:
    server = run([sys.executable, "myserver.py"], project, epmd_port)
    try:
        await push_orders(epmd_port, 250)
        expected = printed_by_the_pipeline()
        server.wait_until(lambda: len(server.stdout) >= len(expected), "three batches")
        assert server.terminate() == 0, "\n".join(server.stderr)
    finally:
        server.kill()
    assert server.stdout[:-1] == expected
    stats = ast.literal_eval(server.stdout[-1])
    assert (stats["handled"], stats["failed"]) == (250, 0)


async def test_the_node_of_your_own_answers_calls_and_stops_on_ctrl_c(
        tmp_path: Path, epmd_port: int) -> None:
    (tmp_path / "echo.py").write_text(named_block("echo.py"))
    echo = run([sys.executable, "echo.py"], tmp_path, epmd_port)
    try:
        async with a_node(epmd_port) as node:
            await eventually_async(lambda: node.connect("py@localhost"))
            answer = await node.call((Atom("echo"), Atom("py@localhost")), Atom("hi"))
            assert answer == (Atom("echo"), Atom("hi"))
        assert echo.terminate(signal.SIGINT) == 0
    finally:
        echo.kill()
    assert not any("Traceback" in line for line in echo.stderr), echo.stderr
