"""Which codec runs, and what the node says about it: PYBROADWAY_PURE_PYTHON forces the pure
one, a missing accelerator falls back to it, and either way one INFO line says so."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.codec import require_native

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
if sys.argv[1] == "hide":
    sys.modules["pybroadway.term._ccodec"] = None  # as if it had not been built
import pybroadway.term as term
from pybroadway.term import _impl
_impl.announce()
_impl.announce()  # once only
print(term.IMPLEMENTATION, term.decode(term.encode([1, term.Atom("a")])))
"""


@pytest.fixture(scope="module", autouse=True)
def implementation() -> Iterator[str]:
    yield "both"  # each case picks its codec in a process of its own


def probe(mode: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PYBROADWAY_PURE_PYTHON": "", **env})


def test_without_the_accelerator_the_pure_codec_runs_and_says_so_once() -> None:
    done = probe("hide")
    assert done.stdout == "python [1, Atom('a')]\n", done.stderr
    # run from this source tree: the line says where the codec is not built and what builds it
    root = Path(__file__).resolve().parents[2]
    assert done.stderr.splitlines() == [
        f"pybroadway.term INFO term codec: pure Python, the compiled codec is not built in "
        f"{root}: `pip install -e .` there builds it (with a C compiler and Python's headers)"]


def test_the_environment_variable_forces_the_pure_codec() -> None:
    done = probe("keep", PYBROADWAY_PURE_PYTHON="1")
    assert done.stdout == "python [1, Atom('a')]\n", done.stderr
    assert "PYBROADWAY_PURE_PYTHON is set" in done.stderr


def test_with_the_accelerator_built_it_runs_silently() -> None:
    require_native()
    done = probe("keep")
    assert done.stdout == "native [1, Atom('a')]\n" and done.stderr == ""
