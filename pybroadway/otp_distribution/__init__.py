"""The off_broadway_otp_distribution connector: BEAM clients feed a Python pipeline.

Elixir clients of the library ``off_broadway_otp_distribution`` find the receiver with
``:global.whereis_name(:off_broadway_otp_distribution_receiver)``, ``GenServer.call`` it with
``:register`` and push with ``GenServer.cast(receiver, {:push_message, data})`` or answer pull
requests; nothing changes on their side. On the Python side::

    async with Node("server@localhost", cookie="secret") as node:
        pipeline = Pipeline(
            handle_message=lambda processor, message, context: message,
            producer={"module": (OtpDistributionProducer, {"node": node, "mode": "push"})},
            processors={"default": {"concurrency": 2}})
        async with pipeline:
            ...

:class:`Client` does in Python what the Elixir client does. Logging goes to the
``pybroadway.otp_distribution`` logger.
"""

from ._client import Client, ConnectError, QueueFull
from ._producer import Mode, OtpDistributionProducer, Overflow
from ._receiver import DEFAULT_NAME, Receiver, Sink
from ._struct import message_struct

__all__ = [
    "DEFAULT_NAME",
    "Client",
    "ConnectError",
    "Mode",
    "OtpDistributionProducer",
    "Overflow",
    "QueueFull",
    "Receiver",
    "Sink",
    "message_struct",
]
