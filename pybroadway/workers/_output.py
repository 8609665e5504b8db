"""The output of the workers a front starts, relayed by the front, each line marked with the
worker's name (its node's short name, ``server_w0``).

A worker started by its front (``pybroadway worker --output-to-front``) writes to two pipes
the front reads as they come. Its stdout is line-buffered: a handler's ``print`` reaches the
front when its line ends (or at a flush: the front joins the pieces of a line), and the front
prints it on its own stdout as ``server_w0: text``, where the handler's ``print`` would go
without workers. Its log records are written to stderr one line each (:func:`log_for_front`),
which the front logs again on ``pybroadway.workers.output`` at the record's level, so they
come out in the front's own format (``HH:MM:SS.mmm [INFO] server_w0: text``); any other line
of its stderr (a traceback the interpreter printed, a ``print(file=sys.stderr)``) is logged
there at WARNING. A line longer than :data:`LINE_LIMIT` bytes is cut, saying how much was
left out; the front holds at most that much, plus what it reads at a time, per pipe. What a
worker wrote before it died is relayed, its last line too, ended or not.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Callable

from pybroadway._throttle import Throttle

LINE_LIMIT = 16 * 1024
"""Bytes of a line the front relays; the rest of a longer line is counted, not kept."""
READ_SIZE = 64 * 1024
"""Bytes read from a pipe at a time (also the limit of the pipe's reader)."""
RECORD = "\x1f"
"""Starts, and ends the level of, a line that is a log record: ``\\x1f20\\x1ftext``."""

output_log = logging.getLogger("pybroadway.workers.output")

Emit = Callable[[list[str]], None]
_ESCAPED = re.compile(r"\\([\\n])")


class RecordLines(logging.Formatter):
    """A worker's log record as one line its front can log again: :data:`RECORD`, the level
    number, :data:`RECORD`, the message (with its traceback, if any) with backslashes and
    newlines escaped."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\\", "\\\\").replace("\n", "\\n")
        return f"{RECORD}{record.levelno}{RECORD}{text}"


def log_for_front(level: int) -> None:
    """Set a worker up for the front that started it: log records as lines on stderr (from
    ``level`` on; pybroadway's own from WARNING unless ``level`` is DEBUG: the front speaks
    for its workers), stdout line-buffered (it is a pipe, and would be block-buffered)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RecordLines())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if level > logging.DEBUG:
        logging.getLogger("pybroadway").setLevel(max(level, logging.WARNING))
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)


def printed(name: str) -> Emit:
    """What relays a worker's stdout: each line on this process's stdout as ``name: line``."""
    def emit(lines: list[str]) -> None:
        out = sys.stdout
        if out is None:  # no stdout (pythonw, a daemon): as print does, nothing
            return
        out.write("".join(f"{name}: {line}\n" for line in lines))
        out.flush()
    return emit


def logged(name: str) -> Emit:
    """What relays a worker's stderr: its records (:class:`RecordLines`) at their level, other
    lines at WARNING, on ``pybroadway.workers.output`` as ``name: text``."""
    def emit(lines: list[str]) -> None:
        for line in lines:
            level, text = logging.WARNING, line
            if line.startswith(RECORD):
                number, found, rest = line[1:].partition(RECORD)
                if found and number.isascii() and number.isdigit() and len(number) <= 3:
                    level = int(number)
                    text = _ESCAPED.sub(lambda escaped: "\n" if escaped[1] == "n" else "\\",
                                        rest)
            output_log.log(level, "%s: %s", name, text)
    return emit


async def relay(reader: asyncio.StreamReader, emit: Emit) -> None:
    """Read ``reader`` to its end, handing ``emit`` the lines of each read (decoded, without
    their newline; the last one at the end even if unfinished), each cut at
    :data:`LINE_LIMIT` bytes. Lines ``emit`` fails on are dropped, in a throttled warning:
    the pipe is read on, or the worker would block on it."""
    line = bytearray()
    cut = 0
    dropped = Throttle(output_log, logging.WARNING,
                       "failures to relay a worker's output")
    while True:
        chunk = await reader.read(READ_SIZE)
        lines = []
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            stop = len(chunk) if end < 0 else end
            room = LINE_LIMIT - len(line)
            if stop - start > room:
                cut += stop - start - room
            line += chunk[start:start + min(stop - start, room)]
            if end < 0:
                break
            lines.append(_text(line, cut))
            line.clear()
            cut = 0
            start = end + 1
        if not chunk and (line or cut):
            lines.append(_text(line, cut))
        if lines:
            try:
                emit(lines)
            except Exception as exc:  # a closed stream, a character it cannot encode, ...
                dropped.log("%d lines of a worker's output not relayed: %r", len(lines), exc)
        if not chunk:
            return


def _text(line: bytearray, cut: int) -> str:
    text = line.decode(errors="replace")
    return f"{text} [… {cut:,} more bytes cut]" if cut else text


async def drained(relays: list[asyncio.Task[None]], grace: float) -> None:
    """Wait up to ``grace`` seconds for ``relays`` to reach the end of their pipes (a process
    the worker started may hold them open), then stop them."""
    try:
        await asyncio.wait(relays, timeout=grace)
    finally:
        for task in relays:
            task.cancel()
