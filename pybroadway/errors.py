"""The root of every error pybroadway raises.

Each public error derives from :class:`PyBroadwayError` and keeps the standard-library base a
caller would expect of it (``DecodeError`` is a ``ValueError``, ``CallError`` a
``RuntimeError``, …), so ``except PyBroadwayError`` catches everything the library raises on
purpose, and code written against the stdlib bases keeps working.
"""

from __future__ import annotations


class PyBroadwayError(Exception):
    """Base class of every error raised by pybroadway."""
