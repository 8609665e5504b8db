"""GenStage across the wire, joined to the pipeline.

A pipeline fed by GenStage producers (Elixir's, or Python :class:`ProducerStage`\\ s)::

    pipeline = Pipeline(
        handle_message=handle,
        producer={"module": (GenStageProducer, {
            "node": node, "subscribe_to": [("events", "app@host", {"max_demand": 1000})]})})

and Python events for Elixir consumers::

    stage = await expose(node, "results")      # {:results, :"py@host"} for GenStage
    await stage.emit(events)                   # or: return await forward(stage, messages)

Logging goes to the ``pybroadway.gen_stage`` logger.
"""

from pybroadway.erldist.stages import (
    BroadcastDispatcher,
    DemandDispatcher,
    PartitionDispatcher,
    ProducerStage,
)

from ._expose import Emitter, ExposedStage, emitted, expose, forward
from ._producer import GenStageProducer, MessagesFrom, Source, SubscribeTo, parse_source

__all__ = [
    "BroadcastDispatcher",
    "DemandDispatcher",
    "Emitter",
    "ExposedStage",
    "GenStageProducer",
    "MessagesFrom",
    "PartitionDispatcher",
    "ProducerStage",
    "Source",
    "SubscribeTo",
    "emitted",
    "expose",
    "forward",
    "parse_source",
]
