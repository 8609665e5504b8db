"""The workers plug into a pipeline as an offload: ``offload=(WorkerFront, {...})`` is checked
by the workers' own schema when the pipeline is made, and what it leaves out is completed when
it starts (or refused, saying what to give)."""

from __future__ import annotations

from typing import Any

import pytest

from pybroadway.errors import ArgumentError
from pybroadway.pipeline import OffloadSetup, OptionsError, Producer
from pybroadway.workers import WorkerFront
from pybroadway.workers._schema import MAX_WORKERS
from testkit.doubles import Passthrough


@pytest.mark.parametrize(("options", "message"), [
    ({"count": -1}, r"invalid value for :count option: expected non negative integer, "
                    r"got: -1 \(in options \[:offload\]\)"),
    ({"workers": 2}, r"unknown options \[:workers\], valid options are: \[:count, "),
    ({"node": "front@localhost"}, r"invalid value for :node option: expected a Node, got: "
                                  r"'front@localhost' \(in options \[:offload\]\)"),
    ({"max_in_flight": 0}, r"invalid value for :max_in_flight option: expected positive"),
    ({"count": 100_000}, rf"invalid value for :count option: expected at most {MAX_WORKERS}, "
                         r"got: 100000 \(in options \[:offload\]\)"),
    ({"max_demand": 10**6}, r"invalid value for :max_demand option: expected at most 100,000"),
])
def test_bad_workers_options_are_refused_when_the_pipeline_is_made(
        options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        Passthrough(producer={"module": Producer}, processors={"default": {}},
                    offload=(WorkerFront, options))


def test_the_options_are_completed_with_the_defaults() -> None:
    pipeline = Passthrough(producer={"module": Producer}, processors={"default": {}},
                           offload=WorkerFront)
    module, options = pipeline.options["offload"]
    assert module is WorkerFront
    assert (options["count"], options["max_in_flight"], options["redeliver"]) == (1, 2000, False)


def test_without_a_node_given_or_a_producer_that_has_one_the_front_says_what_to_give() -> None:
    pipeline = Passthrough(producer={"module": Producer}, processors={"default": {}},
                           offload=WorkerFront)
    setup = OffloadSetup("P", Passthrough, pipeline.options, 1, 1, [Producer()])
    with pytest.raises(ArgumentError, match=r"the workers need the front's node: give "
                                            r"offload=\(WorkerFront, \{'node': node\}\)"):
        WorkerFront(pipeline.options["offload"][1], setup)
