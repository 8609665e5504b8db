"""pybroadway: a Python Erlang-distribution node hosting a Broadway-style data pipeline.

Layers: :mod:`pybroadway.term` (the external term format), :mod:`pybroadway.erldist` (the
distribution node), :mod:`pybroadway.pipeline` (the Broadway-style engine) and
:mod:`pybroadway.otp_distribution` (the connector joining them); :mod:`pybroadway.metrics`
exports them to Prometheus (it needs the ``metrics`` extra and is imported only when used).
Every error the library raises derives from :class:`PyBroadwayError` and keeps the stdlib base
a caller would expect; the errors all layers share are here (see :mod:`pybroadway.errors`).
"""

from pybroadway.errors import (
    ArgumentError,
    ArgumentTypeError,
    CallbackError,
    NotFound,
    PyBroadwayError,
    StateError,
    TimedOut,
)

#: The version of the installed package.
__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "CallbackError",
    "NotFound",
    "PyBroadwayError",
    "StateError",
    "TimedOut",
    "__version__",
]
