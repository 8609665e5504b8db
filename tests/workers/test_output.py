"""What a front's workers print and log reaches the front, each line marked with the worker:
their stdout on the front's stdout, their records (and other stderr lines) in the front's log,
in its format; a flood line is cut; a worker killed mid-line leaves all it wrote. Real worker
processes (:class:`WorkerFront`'s and ``pybroadway serve --workers 2``'s)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from pathlib import Path

import pytest

from pybroadway.erldist import Node
from pybroadway.otp_distribution import DEFAULT_NAME, Client
from pybroadway.workers._output import LINE_LIMIT, RecordLines, logged, relay
from testkit.peers import free_port, unique_name
from testkit.processes import WatchedProcess, python_env
from testkit.wait import eventually_async

from .kit import WAIT, Tally, front, front_of, push, worker_command
from .pipelines import FLOOD, Talker

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
PRINTED = re.compile(r"^(\S+_w[01]): printed (\d+)$")
COUNT = 50


class Stdout:
    """What the test's stdout has received so far, as lines (capsys hands it out once)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def lines(self) -> list[str]:
        self.text += self.capsys.readouterr().out
        return self.text.splitlines()


def relayed(caplog: pytest.LogCaptureFixture, needle: str) -> list[tuple[int, str]]:
    """The workers' records the front logged that contain ``needle``."""
    return [(record.levelno, record.getMessage()) for record in caplog.records
            if record.name == "pybroadway.workers.output" and needle in record.getMessage()]


async def test_a_workers_prints_and_records_reach_the_front_marked_with_it(
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway.workers.output")
    out = Stdout(capsys)
    tally = Tally(COUNT)
    async with front(Talker) as (_, pipeline):
        await push(pipeline, tally.messages([str(i).encode() for i in range(COUNT)]))
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
        await eventually_async(lambda: len([line for line in out.lines()
                                            if PRINTED.match(line)]) == COUNT)
        await eventually_async(lambda: len(relayed(caplog, ": logged ")) == COUNT)
    printed = {int(found[2]): found[1] for line in out.lines() if (found := PRINTED.match(line))}
    assert sorted(printed) == list(range(COUNT)), "each line once, its two writes joined"
    records = relayed(caplog, ": logged ")
    assert sorted(records) == sorted((logging.INFO, f"{printed[i]}: logged {i}")
                                     for i in range(COUNT)), "marked by the worker that printed"


async def test_a_flood_line_is_cut_and_the_next_line_comes_whole(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = Stdout(capsys)
    tally = Tally(2)
    async with front(Talker) as (_, pipeline):
        await push(pipeline, tally.messages([b"flood", b"7"]))
        await asyncio.wait_for(tally.all_done.wait(), WAIT)
        await eventually_async(lambda: any(PRINTED.match(line) for line in out.lines()))
    flood = next(line for line in out.lines() if "xxx" in line)
    cut = f" [… {FLOOD - LINE_LIMIT:,} more bytes cut]"
    assert flood.partition(": ")[2] == "x" * LINE_LIMIT + cut
    assert [found[2] for line in out.lines() if (found := PRINTED.match(line))] == ["7"]


async def test_a_worker_killed_mid_line_leaves_all_it_wrote(
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybroadway.workers.output")
    out = Stdout(capsys)
    tally = Tally(1)
    async with front(Talker) as (_, pipeline):
        await push(pipeline, tally.messages([b"die"]))
        await asyncio.wait_for(tally.all_done.wait(), WAIT)  # failed: its worker went away
        await eventually_async(lambda: any(line.endswith(": unfinished")
                                           for line in out.lines()), what=lambda: out.text)
    lines = out.lines()
    mark = lines[0].partition(": ")[0]
    assert lines[:2] == [f"{mark}: last words", f"{mark}: unfinished"]
    assert (logging.WARNING, f"{mark}: dying") in relayed(caplog, "dying")


async def test_a_worker_started_by_hand_writes_to_its_own_stdout_and_stderr() -> None:
    tally = Tally(3)
    async with front(Talker, ready=False, count=0) as (node, pipeline):
        worker = await worker_command(node, "tests.workers.pipelines:Talker", "Talker")
        try:
            await eventually_async(lambda: len(front_of(pipeline).workers) == 1, timeout=WAIT)
            await push(pipeline, tally.messages([b"0", b"1", b"2"]))
            await asyncio.wait_for(tally.all_done.wait(), WAIT)
        finally:
            with contextlib.suppress(ProcessLookupError):  # ended already: its output says why
                worker.terminate()
            out, err = await asyncio.wait_for(worker.communicate(), WAIT)
    assert out.decode().splitlines() == [
        "printed 0", "printed 1", "printed 2", "handled 3, failed 0"]
    assert re.search(r"(?m)^\d\d:\d\d:\d\d\.\d{3} \[INFO\] logged 2$", err.decode()), err


async def test_relay_joins_pieces_cuts_long_lines_and_ends_the_last_one() -> None:
    reader = asyncio.StreamReader()
    got: list[str] = []
    for piece in (b"a", b"b\nc\n", b"y" * (LINE_LIMIT + 5), b"z\n\npartial"):
        reader.feed_data(piece)
    reader.feed_eof()
    await relay(reader, got.extend)
    assert got == ["ab", "c", "y" * LINE_LIMIT + " [… 6 more bytes cut]", "", "partial"]


def test_a_record_crosses_as_one_line_and_is_logged_whole_at_its_level(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pybroadway.workers.output")
    try:
        raise ValueError("two\nlines")
    except ValueError:
        record = logging.LogRecord("mine", logging.ERROR, __file__, 1, "failed on %r",
                                   ("back\\slash",), sys.exc_info())
    line = RecordLines().format(record)
    assert "\n" not in line
    logged("w0")([line, "a stray line", "\x1fno level\x1fx"])
    assert [(got.levelno, got.getMessage()) for got in caplog.records] == [
        (logging.ERROR, "w0: " + logging.Formatter().format(record)),
        (logging.WARNING, "w0: a stray line"), (logging.WARNING, "w0: \x1fno level\x1fx")]


async def test_serve_with_workers_prints_their_lines_and_logs_their_records() -> None:
    epmd_port = free_port()
    sname = f"{unique_name('front')}@localhost"
    serve = WatchedProcess(
        [sys.executable, "-m", "pybroadway", "serve", "--workers", "2", "--quiet",
         "--pipeline", "tests.workers.pipelines:Talker", "--cookie", "output_cookie",
         "--sname", sname, "--epmd-port", str(epmd_port)],
        cwd=ROOT, env=python_env(PYTHONPATH=str(ROOT)))
    try:
        await asyncio.to_thread(serve.wait_logged, "PyBroadway: worker ", 2, 30)
        async with Node(f"{unique_name('pyc')}@localhost", cookie="output_cookie",
                        epmd_port=epmd_port) as node:
            client = await Client.start(node, receiver=(DEFAULT_NAME, sname))
            for i in range(10):
                client.push_message(str(i).encode())
            await asyncio.to_thread(serve.wait_logged, ": logged ", 10)
            code = await asyncio.to_thread(serve.terminate)
        assert code == 0, "\n".join(serve.stderr[-30:])
        printed = sorted(int(found[2]) for line in serve.stdout
                         if (found := PRINTED.match(line)))
        assert printed == list(range(10)), serve.stdout
        short = sname.partition("@")[0]
        logged = [line for line in serve.stderr if ": logged " in line]
        one_format = re.compile(rf"^\d\d:\d\d:\d\d\.\d{{3}} \[INFO\] {short}_w[01]: logged \d$")
        assert all(one_format.match(line) for line in logged), logged
        assert serve.summary() == (10, 0, 0)
    finally:
        serve.kill()
