"""pybroadway: a Python Erlang-distribution node hosting a Broadway-style data pipeline."""

__version__ = "0.1.0"
