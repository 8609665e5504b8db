"""What the commands write on the terminal: the log lines' one format and ``--log-level``,
and ``serve``'s status line (rates and counts each second, "draining N messages" while it
stops), which never shares a line with what the handlers print."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from typing import Any, TextIO

from pybroadway.pipeline import Pipeline

CLEAR = "\r\x1b[K"
"""Back to the start of the line, and erase it."""

LOG_FORMAT = "%(asctime)s.%(msecs)03d [%(levelname)s] %(message)s"
"""The one shape of pybroadway's log lines (``05:19:07.271 [INFO] node … connected``): the
server's, the EPMD's, the example client's."""


def setup_logging(quiet: bool = False, level: int = logging.INFO) -> None:
    """Log to stderr from ``level`` on, in :data:`LOG_FORMAT`; ``quiet`` leaves out the
    per-message lines only."""
    if quiet:
        logging.getLogger("pybroadway.serve.messages").setLevel(logging.WARNING)
    # On a terminal each log line first clears the status line, which is redrawn after it.
    clear = CLEAR if sys.stderr.isatty() else ""
    logging.basicConfig(level=level, format=clear + LOG_FORMAT, datefmt="%H:%M:%S")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_log_level(parser: argparse.ArgumentParser, default: str | None) -> None:
    """The ``--log-level`` option: the least level logged."""
    parser.add_argument("--log-level", default=default, choices=LOG_LEVELS,
                        help=f"the least level logged (default {default or 'INFO'})")


def in_foreground(stream: Any) -> bool:
    """Whether ``stream`` is a terminal whose foreground process group is this process's
    (not so after ``serve &`` or Ctrl-Z then ``bg``: then the status line stays off the
    terminal the user is typing in)."""
    try:
        return bool(stream.isatty()) and os.tcgetpgrp(stream.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


class StatusLine:
    """The last line of the terminal, redrawn in place. While it runs, ``sys.stdout`` and
    ``sys.stderr`` erase it before anything else is written (a handler's ``print``), so that
    output starts on a line of its own; the next redraw puts the status line back under it."""

    def __init__(self, pipeline: Pipeline, producer: Any, stopping: asyncio.Event) -> None:
        self.pipeline = pipeline
        self.producer = producer
        self.stopping = stopping
        self.terminal = sys.stderr
        self._shown = False
        self._partial = False  # output left a line unfinished: do not draw after it

    def erase(self) -> None:
        """Take the status line off the terminal (before other output)."""
        if self._shown:
            self._shown = False
            self.terminal.write(CLEAR)
            self.terminal.flush()

    def wrote(self, text: str) -> None:
        """Other output was written; ``text`` is its end."""
        if text:
            self._partial = not text.endswith("\n")

    def draw(self, text: str) -> None:
        if self._partial or not in_foreground(self.terminal):
            return
        self.terminal.write(CLEAR + text)
        self.terminal.flush()
        self._shown = True

    def text(self) -> str:
        stats = self.pipeline.stats()
        if self.stopping.is_set():
            left = stats["in_flight"] + stats["buffered"]
            return f"draining {left:,} message{'' if left == 1 else 's'} " \
                   f"(Ctrl-C again to stop now)"
        receiver = getattr(self.producer, "receiver", None)
        clients = len(receiver.clients if receiver is not None
                      else self.producer.subscriber.subscriptions)
        workers = stats.get("workers")
        shown = "" if workers is None else \
            f"{len(workers)} worker{'' if len(workers) == 1 else 's'}  "
        return (f"{stats['rate']:,.0f} msg/s  {stats['handled']:,} handled  "
                f"{stats['failed']:,} failed  {stats['buffered']:,} buffered  "
                f"{clients} client{'' if clients == 1 else 's'}  {shown}"
                f"version {stats['version']}{_reloaded(stats)}")

    async def run(self) -> None:
        """Redraw each second, and at once when the stop begins, until cancelled; the
        standard streams erase the line while it runs."""
        streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Erasing(sys.stdout, self), _Erasing(sys.stderr, self)
        try:
            while True:
                if self.stopping.is_set():
                    await asyncio.sleep(1.0)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), 1.0)
                self.draw(self.text())
        finally:
            sys.stdout, sys.stderr = streams
            self.erase()


def _reloaded(stats: dict[str, Any]) -> str:
    """`` since 05:19:07`` (local time) once a reload changed the version, else nothing."""
    return time.strftime(" since %H:%M:%S", time.localtime(stats["since"])) \
        if stats["reloads"] else ""


class _Erasing:
    """A text stream that erases the status line before it writes."""

    def __init__(self, stream: TextIO, status: StatusLine) -> None:
        self._stream = stream
        self._status = status

    def write(self, text: str) -> int:
        if text:
            self._status.erase()
            self._status.wrote(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...
        return getattr(self._stream, name)
