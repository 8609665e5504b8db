"""The root of every error pybroadway raises, and the errors every layer shares.

Each public error derives from :class:`PyBroadwayError` and keeps the standard-library base a
caller would expect of it, so ``except PyBroadwayError`` catches everything the library raises
on purpose, and code written against the stdlib bases keeps working:

- :class:`ArgumentError` (a ``ValueError``): a value handed to a public function, constructor
  or option is not one it accepts — ``pybroadway.pipeline.OptionsError`` is one (it names the
  option's key path).
- :class:`ArgumentTypeError` (a ``TypeError``): an argument of a type the function does not
  take.
- :class:`CallbackError` (a ``TypeError``): code the library calls back — a pipeline's
  ``handle_message`` / ``handle_batch`` / ``prepare_messages``, a producer, an acknowledger —
  is missing or returned what its contract does not allow.
- :class:`StateError` (a ``RuntimeError``): the call does not fit the state things are in — a
  node, pipeline or server not started, started already or stopped, or a part the call needs
  not there (rate limiting off, the native codec not built). ``stages.StageStopped`` and
  ``pg.ScopeNotRunning`` are ones.
- :class:`NotFound` (a ``KeyError``, so a ``LookupError``): a name or id that names nothing.
- :class:`TimedOut` (a ``TimeoutError``): a wait the library bounds ran out.

Each package's own errors follow the same rule: ``erldist.CallError`` (``RuntimeError``),
``term.DecodeError`` (``ValueError``), ``term.EncodeError`` (``TypeError``),
``otp_distribution.ConnectError`` (``ConnectionError``). Those that carry only the library's
meaning derive from :class:`PyBroadwayError` alone: ``HandshakeError``, ``EpmdError``,
``ProtocolError``, ``NodeDown``, ``WorkerError``, and ``erldist.Exit``, which ends a process
with a reason.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "CallbackError",
    "NotFound",
    "PyBroadwayError",
    "StateError",
    "TimedOut",
]


class PyBroadwayError(Exception):
    """Base class of every error raised by pybroadway."""


class ArgumentError(PyBroadwayError, ValueError):
    """A value given to a public function, constructor or option is not one it accepts."""


class ArgumentTypeError(PyBroadwayError, TypeError):
    """An argument is of a type the function does not take."""


class CallbackError(PyBroadwayError, TypeError):
    """A callback the library calls is missing or returned what its contract does not allow."""


class StateError(PyBroadwayError, RuntimeError):
    """The call does not fit the state things are in: not started, started already, stopped,
    or without a part it needs."""


class NotFound(PyBroadwayError, KeyError):
    """A name or id names nothing."""

    # KeyError's own text is the repr of its argument; this one's is a sentence.
    __str__ = Exception.__str__


class TimedOut(PyBroadwayError, TimeoutError):
    """A wait the library bounds ran out."""
