"""``pybroadway serve --workers 2`` as users run it, fed by the Python Client and stopped with
SIGTERM while its workers hold messages: it drains (every message the receiver read is
handled or failed, none dropped), exits 0 with its summary line, leaves no worker process
behind and no traceback. No Erlang is needed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from pybroadway.erldist import Node
from pybroadway.otp_distribution import DEFAULT_NAME, Client
from testkit.peers import free_port, unique_name
from testkit.processes import WatchedProcess, python_env
from testkit.recorded import PIPELINE, recorded
from testkit.wait import eventually, eventually_async

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
COOKIE = "serve_workers_cookie"
PUSHED = re.compile(r"\[INFO\] push_message: (\d+)$")
COUNT = 300
SLEEP_MS = 15  # per message, in the event loop (sync handlers run inline): about 4.5 s in all


def children(pid: int) -> set[int]:
    """The pids of the processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def workers_of(front: str) -> set[int]:
    """The pids of the live ``pybroadway worker`` processes that join ``front`` (from /proc:
    a worker whose front is gone is no longer its child)."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if b"worker" in argv and front.encode() in argv:
            found.add(int(cmdline.parent.name))
    return {pid for pid in found if alive(pid)}


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_sigterm_while_workers_hold_messages_drains_them(tmp_path: Path) -> None:
    log = tmp_path / "handled"
    epmd_port = free_port()
    sname = f"{unique_name('front')}@localhost"
    env = python_env(PYTHONPATH=str(ROOT), PYBROADWAY_TEST_LOG=str(log),
                     PYBROADWAY_TEST_SLEEP_MS=str(SLEEP_MS))
    serve = WatchedProcess(
        [sys.executable, "-m", "pybroadway", "serve", "--workers", "2",
         "--pipeline", PIPELINE, "--cookie", COOKIE,
         "--sname", sname, "--epmd-port", str(epmd_port)], cwd=ROOT, env=env)
    try:
        await asyncio.to_thread(serve.wait_logged, "PyBroadway: worker ", 2, 30)
        workers = children(serve.proc.pid)
        assert len(workers) == 2, workers
        async with Node(f"{unique_name('pyc')}@localhost", cookie=COOKIE,
                        epmd_port=epmd_port) as node:
            client = await Client.start(node, receiver=(DEFAULT_NAME, sname))
            for i in range(COUNT):
                client.push_message(i)

            def pushed() -> list[int]:
                return [int(m.group(1)) for line in list(serve.stderr)
                        if (m := PUSHED.search(line))]

            await eventually_async(lambda: len(pushed()) == COUNT, timeout=20,
                                   what=lambda: f"{len(pushed())} of {COUNT} read")
            await eventually_async(lambda: len(recorded(log)) >= 20, timeout=20)
            handled_before = len(recorded(log))
            code = await asyncio.to_thread(serve.terminate)
        stderr = "\n".join(serve.stderr)
        assert code == 0, stderr[-3000:]
        assert handled_before < COUNT, "the workers held nothing when SIGTERM came"
        assert serve.stdout, stderr[-3000:]
        assert serve.summary() == (COUNT, 0, 0), stderr[-3000:]
        assert len(serve.stdout) == 1, f"serve's summary only, not its workers': {serve.stdout}"
        # the front speaks for its workers; theirs log from WARNING on
        assert not [line for line in serve.stderr if " serves PyBroadway for " in line]
        assert sorted(pushed()) == list(range(COUNT))
        assert sorted(recorded(log)) == list(range(COUNT)), "each handled exactly once"
        assert {int(path.suffix[1:]) for path in tmp_path.glob("handled.*")} <= workers
        assert not [pid for pid in workers if alive(pid)], "a worker outlived serve"
        assert "Traceback" not in stderr, stderr
        # A clean start and stop warns of nothing but what global's partition prevention may
        # say as the workers leave one by one (as a BEAM node's global does when another
        # stops: another node's lost_connection can come before its own nodedown), and what a
        # worker says once of this handler, which sleeps in the event loop on purpose.
        noise = [line for line in serve.stderr if ("[WARNING]" in line or "[ERROR]" in line)
                 and "in order to prevent overlapping partitions" not in line
                 and "handle_message held the event loop" not in line]
        assert not noise, "\n".join(noise)
    finally:
        serve.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda sig: sig.name)
def test_a_signal_while_the_workers_start_stops_them_at_once(sig: signal.Signals) -> None:
    """SIGTERM (or Ctrl-C's SIGINT) as the first worker process appears: serve stops what it
    started, its workers included, exits promptly, and no worker outlives it."""
    sname = f"{unique_name('early')}@localhost"
    serve = WatchedProcess(
        [sys.executable, "-m", "pybroadway", "serve", "--workers", "2", "--cookie", COOKIE,
         "--sname", sname, "--epmd-port", str(free_port())], cwd=ROOT,
        env=python_env(PYTHONPATH=str(ROOT)))
    try:
        spawned = eventually(lambda: children(serve.proc.pid), timeout=30, interval=0.005,
                             what="a worker process")
        signalled = time.monotonic()
        code = serve.terminate(sig, timeout=30)
        took = time.monotonic() - signalled
        stderr = "\n".join(serve.stderr)
        assert code == 0 and "Traceback" not in stderr, stderr[-3000:]
        assert took < 10, f"serve took {took:.1f}s to stop"
        assert not [pid for pid in spawned if alive(pid)], "a worker outlived serve"
        assert not workers_of(sname), "a worker started after the signal outlived serve"
    finally:
        serve.kill()
        for pid in workers_of(sname):  # a failed test leaves none behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
