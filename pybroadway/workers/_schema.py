"""The options of ``offload=(WorkerFront, {...})``, checked by the pipeline's validator
(errors name the path ``[:offload]``), and how the ones left out are completed when the
pipeline starts: the front's node and the ``module:Class`` the workers import."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pybroadway.erldist import Node
from pybroadway.errors import ArgumentError
from pybroadway.pipeline import OffloadSetup
from pybroadway.pipeline.options import MAX_DEMAND, Option, OptionsError, validate

#: The most worker processes a front starts: each is a Python process (tens of MB), and more
#: than a few per CPU only compete for the CPUs (a pipeline waiting on I/O wants concurrency,
#: not processes).
MAX_WORKERS = 4 * (os.cpu_count() or 1)

#: The options of :class:`WorkerFront` (``offload=(WorkerFront, {...})``, ``[workers]``).
SCHEMA: dict[str, Option] = {
    "count": Option("non_neg_integer",
                    "Worker processes this node starts and supervises (on loopback); "
                    "0: only workers that join from other hosts.", default=1,
                    maximum=MAX_WORKERS),
    "node": Option("any", "The front's Node.",
                   default_doc="the node of the producer (one with a `node` attribute)"),
    "redeliver": Option("boolean",
                        "Hand the messages of a worker that went away to another one "
                        "(at least once) instead of failing them.", default=False),
    "max_demand": Option("pos_integer", "Events each worker asks for at a time.",
                         default=500, maximum=MAX_DEMAND),
    "max_in_flight": Option("pos_integer",
                            "Messages given to the workers and not yet back, per producer "
                            "and partition.", default=2000),
    "max_restarts": Option("non_neg_integer",
                           "Worker restarts allowed within max_seconds before the pipeline "
                           "stops.", default=3),
    "max_seconds": Option("pos_number", "See max_restarts.", default=5),
    "python": Option("string", "The interpreter running the workers.",
                     default_doc="sys.executable"),
    "pipeline": Option("string", "module:Class of the pipeline the workers import.",
                       default_doc="the pipeline's own class"),
    "extra_args": Option("any", "More arguments for `pybroadway worker`.",
                         default_factory=list, default_doc="[]"),
}


def validate_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked against :data:`SCHEMA`, with its defaults."""
    checked = validate(options, SCHEMA, ("offload",))
    node = checked["node"]
    if node is not None and not isinstance(node, Node):
        raise OptionsError(f"invalid value for :node option: expected a Node, got: {node!r}",
                           "node", ("offload",), node)
    return checked


def completed(options: dict[str, Any], setup: OffloadSetup) -> dict[str, Any]:
    """The options with the front's node (the producer's, unless given) and the
    ``module:Class`` the workers import (the pipeline's class, unless given)."""
    resolved = dict(options)
    if resolved["node"] is None:
        nodes = [getattr(producer, "node", None) for producer in setup.producers]
        resolved["node"] = next((node for node in nodes if isinstance(node, Node)), None)
        if resolved["node"] is None:
            raise ArgumentError("the workers need the front's node: give offload=(WorkerFront, "
                                "{'node': node}) (the producer has none)")
    if resolved["pipeline"] is None:
        cls = setup.pipeline_class
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__ \
                or (cls.__name__ == "Pipeline" and cls.__module__.startswith("pybroadway.")):
            raise ArgumentError(
                f"workers import the pipeline class by module path, and {cls.__qualname__} "
                f"(in {cls.__module__}) cannot be imported so: define the Pipeline subclass in a "
                f"module of its own (not __main__, not inside a function), or name it with "
                f"offload=(WorkerFront, {{'pipeline': 'module:Class'}})")
        resolved["pipeline"] = f"{cls.__module__}:{cls.__qualname__}"
    return resolved
