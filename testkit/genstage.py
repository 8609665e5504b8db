"""The GenStage stand-ins (``pb_gen_stage.erl``: a producer and a consumer in plain Erlang,
written from GenStage's message protocol), compiled once per session for the tests and the
benchmarks."""

from __future__ import annotations

import subprocess
import tempfile
import threading

from testkit.peers import HERE, require

_dir: str | None = None
_lock = threading.Lock()


def standin_dir() -> str:
    """The folder of ``pb_gen_stage.beam`` (compiled by OTP 25's erlc; OTP 28 loads it):
    give it to a node with ``-pa``."""
    global _dir
    with _lock:
        if _dir is None:
            out = tempfile.mkdtemp(prefix="pb-gen-stage-")
            subprocess.run([require("erlc", "erlc"), "-o", out, str(HERE / "pb_gen_stage.erl")],
                           check=True)
            _dir = out
    return _dir
