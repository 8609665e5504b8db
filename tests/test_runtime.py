"""Process-wide settings: tune_gc changes the youngest generation's threshold alone, and the
serving and worker commands apply it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pybroadway import cli
from pybroadway.runtime import STREAM_GC_THRESHOLD, tune_gc


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 11, 12)
    yield gc.get_threshold()
    gc.set_threshold(*saved)


def test_tune_gc_sets_the_youngest_generation_only(thresholds: tuple[int, int, int]) -> None:
    tune_gc()
    assert gc.get_threshold() == (STREAM_GC_THRESHOLD, 11, 12)
    tune_gc(5000)
    assert gc.get_threshold() == (5000, 11, 12)


@pytest.mark.parametrize("command", [["serve", "--pipeline", "no_such_module:Pipeline"],
                                     ["worker", "--join", "front@localhost",
                                      "--pipeline", "no_such_module:Pipeline"]])
def test_serve_and_worker_tune_the_collector(thresholds: tuple[int, int, int],
                                             command: list[str]) -> None:
    # The pipeline cannot be imported: they stop at once, saying so in one line (a usage
    # error, exit code 2)
    assert cli.main(command) == 2
    assert gc.get_threshold() == (STREAM_GC_THRESHOLD, 11, 12)


def test_ping_leaves_the_collector_alone(thresholds: tuple[int, int, int]) -> None:
    cli.main(["ping", "nobody@localhost", "--epmd-port", "1"])
    assert gc.get_threshold() == thresholds
