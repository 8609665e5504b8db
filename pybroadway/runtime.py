"""Process-wide settings for a process whose work is a stream of messages.

``pybroadway serve`` and ``pybroadway worker`` apply them when they start; a program that runs
a pipeline itself can call :func:`tune_gc` and :func:`raise_fd_limit` too.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import resource

log = logging.getLogger("pybroadway.runtime")

STREAM_GC_THRESHOLD = 10_000
"""Allocations between two collections of the youngest generation (CPython's default: 700)."""


def tune_gc(threshold: int = STREAM_GC_THRESHOLD) -> None:
    """Collect the youngest generation of the cyclic garbage collector every ``threshold``
    allocations of container objects; the older generations keep their settings.

    Each message costs a few such objects (its ``Message``, tuples, the decoded term) that live
    for one batch, a millisecond or so. Collected every 700 allocations, a batch of a thousand
    messages is walked several times while it is still alive and is promoted to the older
    generations, whose collections walk it again: with a no-op handler that was a fifth of a
    worker's time and a tenth of the serving node's (``bench/workers.py --elixir``). At 10,000,
    most of a batch is gone before a collection looks at it. Garbage in reference cycles waits
    a little longer to be freed; nothing else changes.
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)


def raise_fd_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit: every connection and
    registration is a file, and the default soft limit (often 1,024) is soon reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # not allowed here: keep what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.debug("open files: soft limit raised from %d to %d", soft, hard)
