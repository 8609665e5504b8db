"""pybroadway: a Python node of the Erlang distribution protocol hosting a Broadway-style pipeline."""

__version__ = "0.1.0"
