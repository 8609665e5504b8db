"""GenStage's message protocol on a Python node: Python processes as GenStage producers and
consumers, for BEAM stages and for other Python ones.

    producer = node.spawn(ProducerStage(), name="events")   # {events, py@host} for Elixir
    await producer.emit(events)                              # waits for demand/room

    consumer = node.spawn(MyConsumer())                      # handle_events(events, sub)
    consumer.subscribe(("events", "app@host"), max_demand=1000)

Knows nothing of the pipeline (:mod:`pybroadway.gen_stage` joins the two). Logging goes to the
``pybroadway.erldist.stages`` logger.
"""

from .consumer import ConsumerStage, Subscription
from .dispatchers import (
    BroadcastDispatcher,
    DemandDispatcher,
    Dispatcher,
    PartitionDispatcher,
    Subscriber,
)
from .producer import ProducerStage, StageStopped
from .protocol import CancelMode, SubscribeOptions

__all__ = [
    "BroadcastDispatcher",
    "CancelMode",
    "ConsumerStage",
    "DemandDispatcher",
    "Dispatcher",
    "PartitionDispatcher",
    "ProducerStage",
    "StageStopped",
    "SubscribeOptions",
    "Subscriber",
    "Subscription",
]
