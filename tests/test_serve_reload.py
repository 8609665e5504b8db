"""Deploying new code to a running ``pybroadway serve`` as an operator does: edit the user's
modules, then ``kill -HUP`` or ``pybroadway reload NODE``, while an Elixir client of the
library's protocol pushes at a steady rate. The client never sees the receiver go down, nothing
is lost or handled twice, and a broken version is refused in one line while the running one
goes on."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pybroadway import cli
from pybroadway._reload import NAME as RELOAD_NAME
from pybroadway.erldist import Node
from pybroadway.otp_distribution import DEFAULT_NAME, Client
from pybroadway.term import Atom, decode
from pybroadway.term.atoms import GEN_CALL
from testkit.peers import BeamPeer, SystemEpmd, free_port, unique_name
from testkit.processes import WatchedProcess, python_env
from testkit.wait import eventually_async
from tests.gen_stage.test_serve import parse
from tests.otp_distribution.test_reload import STEADY_PUSHER

pytestmark = pytest.mark.beam

ROOT = Path(__file__).resolve().parents[1]
COOKIE = "reload_cookie"
READY = " serves off_broadway_otp_distribution_receiver in push mode"
HANDLED = re.compile(r"^(?:\w+: )?handled (\S+) (\w+) (\d+)$")  # a worker's: "name: ..."

# The pipeline module imports the user's other module, which holds the version: a reload
# must import both afresh.
PIPELINE = """
from myversion import VERSION

from pybroadway.pipeline import Pipeline

class Versioned(Pipeline):
    def handle_message(self, processor, message, context):
        label, number = message.data
        print(f"handled {VERSION} {label.name} {number}", flush=True)
        return message
"""


def version_module(version: str) -> str:
    return f'VERSION = "{version}"\n'


class Served:
    """``pybroadway serve`` (by default ``--pipeline mypipeline:Versioned``) in the folder of
    the user's modules."""

    def __init__(self, project: Path, epmd_port: int, *options: str) -> None:
        self.project = project
        self.epmd_port = epmd_port
        self.sname = f"{unique_name('hup')}@localhost"
        self.proc = WatchedProcess(
            [sys.executable, "-m", "pybroadway", "serve",
             *(options or ("--pipeline", "mypipeline:Versioned")), "--quiet",
             "--cookie", COOKIE, "--sname", self.sname, "--epmd-port", str(epmd_port)],
            cwd=project, env=python_env(PYTHONPATH=str(ROOT)))

    def handled(self) -> list[tuple[str, str, int]]:
        return [(found[1], found[2], int(found[3])) for line in list(self.proc.stdout)
                if (found := HANDLED.match(line))]

    def wait_handled(self, count: int, timeout: float = 60) -> None:
        self.proc.wait_until(lambda: len(self.handled()) >= count, f"{count} handled",
                             timeout)

    def deploy(self, version: str) -> None:
        (self.project / "myversion.py").write_text(version_module(version))

    def reload_command(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pybroadway", "reload", self.sname, "--cookie", COOKIE,
             "--epmd-port", str(self.epmd_port), "--sname", f"{unique_name('op')}@localhost"],
            cwd=ROOT, env=python_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
            timeout=60, check=False)


@pytest.fixture
def served(tmp_path: Path, epmd: SystemEpmd) -> Iterator[Served]:
    (tmp_path / "mypipeline.py").write_text(PIPELINE)
    (tmp_path / "myversion.py").write_text(version_module("v1"))
    server = Served(tmp_path, epmd.port)
    try:
        server.proc.wait_logged(READY)
        yield server
    finally:
        server.proc.kill()


async def test_sighup_and_the_reload_command_deploy_without_losing_a_message(
        served: Served, epmd: SystemEpmd) -> None:
    total = 10_000
    with BeamPeer.elixir(epmd_port=epmd.port, cookie=COOKIE) as peer:
        await asyncio.to_thread(peer.wait_started)
        assert decode(await peer.aeval(f"Node.connect(:\"{served.sname}\")")) is True
        await peer.aeval(STEADY_PUSHER)
        await peer.aeval(f"PbSteady.start(:a, {total}, 2, self())")
        proc = served.proc

        await asyncio.to_thread(served.wait_handled, 1000)
        served.deploy("v2")  # the same size as v1, within the same second: still seen
        proc.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(proc.wait_logged, "reloaded: version")

        await asyncio.to_thread(served.wait_handled, 2500)
        served.deploy("v3")
        done = await asyncio.to_thread(served.reload_command)
        assert done.returncode == 0, done.stderr
        assert re.fullmatch(r"reloaded: version [0-9a-f]{12} handles messages\n", done.stdout)

        await asyncio.to_thread(served.wait_handled, 3500)
        (served.project / "myversion.py").write_text("VERSION = (\n")  # refused: v3 goes on
        refused = await asyncio.to_thread(served.reload_command)
        assert refused.returncode == 1
        assert refused.stderr.startswith("pybroadway reload: refused: --pipeline "
                                         "mypipeline:Versioned: cannot import it: ")
        assert "myversion.py, line 1" in refused.stderr and refused.stderr.count("\n") == 1
        assert proc.count("reload refused, version") == 1

        served.deploy("v4")
        proc.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(proc.wait_logged, "reloaded: version", 3)
        reply = decode(await peer.aeval(
            "receive do {:pushed, _, r, down} -> {r, down} after 60_000 -> :timeout end"))
        assert reply[1] == Atom("none")  # the client's monitor never fired
        assert decode(await peer.aeval(
            ":global.whereis_name(:off_broadway_otp_distribution_receiver)")) == reply[0]
        await asyncio.to_thread(served.wait_handled, total)
    assert proc.terminate() == 0
    assert proc.summary() == (total, 0, 0)
    handled = served.handled()
    assert sorted(number for _, _, number in handled) == list(range(1, total + 1))
    assert list(dict.fromkeys(version for version, _, _ in handled)) == ["v1", "v2", "v3", "v4"]
    assert proc.count("Traceback") == 0


def test_a_version_that_fails_to_start_is_refused_in_one_line(served: Served) -> None:
    (served.project / "mypipeline.py").write_text(PIPELINE + """
    def __init__(self, **options):
        raise RuntimeError("no database")
""")
    refused = served.reload_command()
    assert refused.returncode == 1
    assert refused.stderr == "pybroadway reload: refused: RuntimeError: no database\n"
    (served.project / "mypipeline.py").write_text(PIPELINE.replace("Versioned", "Renamed"))
    refused = served.reload_command()
    assert refused.stderr == ("pybroadway reload: refused: --pipeline mypipeline:Versioned: "
                              "cannot import it (module 'mypipeline' has no attribute "
                              "'Versioned')\n")
    served.proc.wait_logged("reload refused, version", 2)


CONFIGURED = """
from pybroadway.pipeline import Pipeline

class Tagged(Pipeline):
    def handle_message(self, processor, message, context):
        print(f"handled {context['tag']} {message.data}", flush=True)
        return message
"""


def config(tag: str, extra: str = "") -> str:
    return f'pipeline = "mypipeline:Tagged"\n{extra}\n[context]\ntag = "{tag}"\n'


async def test_the_config_file_is_read_again_and_what_a_reload_keeps_is_refused(
        tmp_path: Path, epmd: SystemEpmd) -> None:
    (tmp_path / "mypipeline.py").write_text(CONFIGURED)
    (tmp_path / "pipeline.toml").write_text(config("c1"))
    served = Served(tmp_path, epmd.port, "--config", "pipeline.toml")
    proc, sname = served.proc, served.sname
    try:
        proc.wait_logged(READY)
        async with Node(f"{unique_name('cfgc')}@localhost", cookie=COOKIE,
                        epmd_port=epmd.port) as node:
            await node.connect(sname)
            client = await Client.start(node, receiver=(DEFAULT_NAME, sname))
            client.push_message(1)
            await asyncio.to_thread(proc.wait_until, lambda: "handled c1 1" in proc.stdout,
                                    "c1 handled")
            (tmp_path / "pipeline.toml").write_text(config("c2"))
            done = await asyncio.to_thread(served.reload_command)
            assert done.returncode == 0, done.stderr
            client.push_message(2)
            await asyncio.to_thread(proc.wait_until, lambda: "handled c2 2" in proc.stdout,
                                    "c2 handled")
            (tmp_path / "pipeline.toml").write_text(config("c3", '[producer]\nmode = "pull"'))
            refused = await asyncio.to_thread(served.reload_command)
            assert refused.stderr == (
                "pybroadway reload: refused: the configuration changes mode, which a reload "
                "keeps: restart serve to change it\n")
            client.push_message(3)
            await asyncio.to_thread(proc.wait_until, lambda: "handled c2 3" in proc.stdout,
                                    "still c2")
        assert proc.terminate() == 0
        assert proc.summary() == (3, 0, 0)
    finally:
        proc.kill()


# Slow enough that a worker always holds messages when a reload stops it.
SLOW_PIPELINE = PIPELINE.replace("from myversion", "import asyncio\nfrom myversion").replace(
    "    def handle_message(", "    async def handle_message(").replace(
    "        label, number", "        await asyncio.sleep(0.001)\n        label, number")


async def test_with_workers_the_reload_rolls_and_nothing_fails(
        tmp_path: Path, epmd: SystemEpmd) -> None:
    (tmp_path / "mypipeline.py").write_text(SLOW_PIPELINE)
    (tmp_path / "myversion.py").write_text(version_module("v1"))
    served = Served(tmp_path, epmd.port, "--pipeline", "mypipeline:Versioned", "--workers", "2")
    proc, total = served.proc, 8000
    try:
        proc.wait_logged(READY)
        proc.wait_logged("joined", 2, timeout=60)
        with BeamPeer.elixir(epmd_port=epmd.port, cookie=COOKIE) as peer:
            await asyncio.to_thread(peer.wait_started)
            assert decode(await peer.aeval(f"Node.connect(:\"{served.sname}\")")) is True
            await peer.aeval(STEADY_PUSHER)
            await peer.aeval(f"PbSteady.start(:a, {total}, 2, self())")
            await asyncio.to_thread(served.wait_handled, 500)
            served.deploy("v2")
            proc.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(proc.wait_logged, "reloaded: version", 1, 90)
            reply = decode(await peer.aeval(
                "receive do {:pushed, _, r, down} -> {r, down} after 60_000 -> :timeout end"))
            assert reply[1] == Atom("none")
            await asyncio.to_thread(served.wait_handled, total)
        assert proc.terminate() == 0
        assert proc.summary() == (total, 0, 0)
    finally:
        proc.kill()
    handled = served.handled()
    assert sorted(number for _, _, number in handled) == list(range(1, total + 1))
    assert {version for version, _, _ in handled} == {"v1", "v2"}
    assert proc.count("replaced") == 2
    assert proc.count("holding") == 0  # no worker left holding messages


def test_the_reload_command_says_when_there_is_no_serve_to_reload() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pybroadway", "reload", "nosuch@localhost", "--cookie", COOKIE,
         "--epmd-port", str(free_port())], cwd=ROOT, env=python_env(PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("pybroadway reload: cannot reach nosuch@localhost (")
    assert done.stderr.count("\n") == 1 and not done.stdout


@contextlib.asynccontextmanager
async def serving_in_process(made: list[Node]) -> AsyncIterator[Node]:
    """``serve`` run in this process (the default pipeline): its node (``made``: the
    ``nodes`` fixture)."""
    args = parse("--sname", f"{unique_name('sup')}@localhost", "--cookie", "c",
                 "--epmd-port", str(free_port()), "--quiet")
    args.stop = asyncio.Event()
    serving = asyncio.ensure_future(cli.serve(args))
    try:
        await eventually_async(lambda: bool(made) and made[0].whereis(RELOAD_NAME) is not None)
        yield made[0]
    finally:
        args.stop.set()
        await asyncio.wait_for(serving, 20)


async def test_the_reload_server_is_restarted_under_the_nodes_supervisor(
        nodes: list[Node]) -> None:
    """The process `pybroadway reload` calls is long-lived: killed, it comes back under its
    name, so a later reload still finds it."""
    async with serving_in_process(nodes) as node:
        first = node.whereis(RELOAD_NAME)
        assert first is not None
        node.exit(first, Atom("kill"))
        await eventually_async(lambda: node.whereis(RELOAD_NAME) not in (None, first))


async def test_a_reload_call_with_a_forged_caller_does_not_stop_the_reload_server(
        nodes: list[Node]) -> None:
    """A peer's call whose From is not a pid: its reply is dropped, and the server answers
    the next caller (the same process)."""
    async with serving_in_process(nodes) as node:
        first = node.whereis(RELOAD_NAME)
        node.send(RELOAD_NAME, (GEN_CALL, (Atom("forged"), node.make_ref()), Atom("reload")))
        # (this bare serve's reload is refused for want of a command line: the answer counts)
        outcome, said = await node.call(RELOAD_NAME, Atom("reload"), timeout=30)
        assert outcome in (Atom("ok"), Atom("error")) and isinstance(said, bytes)
        assert node.whereis(RELOAD_NAME) == first
