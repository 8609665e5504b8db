"""Errors raised by the term codec."""

from __future__ import annotations

from pybroadway.errors import PyBroadwayError


class DecodeError(PyBroadwayError, ValueError):
    """The bytes are not a valid external term (or break a configured limit).

    ``offset`` is where in the input the problem was found.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at offset {offset})")
        self.offset = offset


class EncodeError(PyBroadwayError, TypeError):
    """The value has no external term form."""


class ConsultError(PyBroadwayError, ValueError):
    """Erlang term text that does not read (:func:`pybroadway.term.consult.consult`).

    ``line`` is the line (from 1) where the problem was found.
    """

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
