"""Broadway's model in asyncio Python: producers, processors, batchers, acknowledgers.

Knows nothing of Erlang: any :class:`Producer` subclass can feed a :class:`Pipeline`.
Logging goes to the ``pybroadway.pipeline`` logger.
"""

from . import options, telemetry
from ._message import (
    NOOP_ACKNOWLEDGER,
    Acknowledger,
    BatchInfo,
    BatchMode,
    Message,
    NoopAcknowledger,
    ack_messages,
)
from ._pipeline import Pipeline
from ._producer import Producer
from .options import OptionsError
from .telemetry import subscribe
from .testing import test_batch, test_message

__all__ = [
    "NOOP_ACKNOWLEDGER",
    "Acknowledger",
    "BatchInfo",
    "BatchMode",
    "Message",
    "NoopAcknowledger",
    "OptionsError",
    "Pipeline",
    "Producer",
    "ack_messages",
    "options",
    "subscribe",
    "telemetry",
    "test_batch",
    "test_message",
]
