"""Broadway's model in asyncio Python: producers, processors, batchers, acknowledgers.

Knows nothing of Erlang: any :class:`Producer` subclass can feed a :class:`Pipeline`.
Logging goes to the ``pybroadway.pipeline`` logger.

A pipeline::

    class Orders(Pipeline):
        def handle_message(self, processor, message, context):
            return message.update_data(parse).put_batcher("db")

        async def handle_batch(self, batcher, messages, batch_info, context):
            await store(messages)
            return messages

    pipeline = Orders(producer={"module": (SocketProducer, {"buffer_size": 5000})},
                      processors={"default": {"concurrency": 4}},
                      batchers={"db": {"batch_size": 100, "batch_timeout": 200}})
    async with pipeline:
        ...

A producer declares its mode with ``mode = "push"`` (the default) or ``mode = "pull"``.
A push-mode producer (data arrives whenever the source sends it)::

    class SocketProducer(Producer):
        def on_buffer_full(self):        # buffer reached buffer_size: stop reading
            self.transport.pause_reading()

        def on_buffer_available(self):   # processors took enough: read again
            self.transport.resume_reading()

        def data_received(self, items):  # called by your protocol
            self.push_messages(Message(item, None, (self.acker, self.ref, None))
                               for item in items)

A pull-mode producer (ask the source for exactly what the processors want)::

    class RemoteProducer(Producer):
        mode = "pull"

        def handle_demand(self, demand):  # new demand; answer now or later
            self.client.request(demand)    # later: self.push_messages(answers)

``push_messages`` never drops: it returns ``False`` once the buffer is full (and
``await producer.wait_for_room()`` waits for room). In pull mode ``pending_demand`` is what the
producer still owes; returning more from ``handle_demand`` is reported.
"""

from . import options, telemetry
from ._callback_log import Failure
from ._message import (
    NOOP_ACKNOWLEDGER,
    Acknowledger,
    BatchInfo,
    BatchMode,
    Message,
    NoopAcknowledger,
    ack_messages,
)
from ._offload import Entry, Offload, OffloadedProcessors, OffloadSetup
from ._pipeline import Pipeline
from ._producer import Producer
from ._supervisor import StageCrashed
from .options import OptionsError
from .telemetry import subscribe
from .testing import kill_stage, test_batch, test_message

__all__ = [
    "NOOP_ACKNOWLEDGER",
    "Acknowledger",
    "BatchInfo",
    "BatchMode",
    "Entry",
    "Failure",
    "Message",
    "NoopAcknowledger",
    "Offload",
    "OffloadSetup",
    "OffloadedProcessors",
    "OptionsError",
    "Pipeline",
    "Producer",
    "StageCrashed",
    "ack_messages",
    "kill_stage",
    "options",
    "subscribe",
    "telemetry",
    "test_batch",
    "test_message",
]
