"""Programs a test runs as users run them, their output read line by line as it comes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

SUMMARY = re.compile(r"^handled (\d+), failed (\d+), dropped (\d+)$")
"""The last line ``pybroadway serve`` prints."""


class WatchedProcess:
    """A subprocess whose stdout and stderr lines are collected by threads as they come, so a
    test can wait for a line (on the readers' notifications) instead of sleeping."""

    def __init__(self, argv: Sequence[str], cwd: Path | str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout),
                             daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr),
                             daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[bytes], lines: list[str]) -> None:
        for raw in stream:
            with self._changed:
                lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def count(self, needle: str) -> int:
        """Lines of stderr that contain ``needle``."""
        with self._changed:
            return sum(needle in line for line in self.stderr)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
        """Wait until ``condition()`` holds; fail with the last lines of stderr if it does not
        within ``timeout`` seconds or the process ends first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                finished = self.proc.poll() is not None and not any(
                    reader.is_alive() for reader in self._readers)
                if left <= 0 or finished:
                    raise AssertionError(f"{what} did not happen within {timeout}s; log:\n"
                                         + "\n".join(self.stderr[-30:]))
                self._changed.wait(left)

    def wait_logged(self, needle: str, count: int = 1, timeout: float = 20) -> None:
        """Wait until ``count`` lines of stderr contain ``needle``."""
        self.wait_until(lambda: self.count(needle) >= count, f"{count} x {needle!r}", timeout)

    def wait_line(self, needle: str, timeout: float = 20) -> str:
        """Wait for a line of stderr that contains ``needle``; return the first one."""
        self.wait_logged(needle, timeout=timeout)
        with self._changed:
            return next(line for line in self.stderr if needle in line)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig``, wait for the exit and for the last output; returns the exit code."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        return code

    def summary(self) -> tuple[int, int, int]:
        """``serve``'s last line, ``handled N, failed F, dropped D``, as (N, F, D); fails the
        test, showing stdout, if the last line of stdout is not that."""
        found = SUMMARY.match(self.stdout[-1]) if self.stdout else None
        assert found, f"no summary line on stdout: {self.stdout[-5:]}"
        handled, failed, dropped = map(int, found.groups())
        return handled, failed, dropped

    def kill(self) -> None:
        """SIGKILL, by pid, if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def python_env(**extra: str) -> dict[str, str]:
    """This environment without PYTHONPATH (a user's shell has none), plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(extra)
    return env
