"""The Python server of the walkthrough: a node whose pipeline BEAM clients feed.

    python examples/broadway.py --mode push|pull [--sname server@localhost] [--cookie C] [--quiet]

Then, from ``iex --sname client@localhost``: ``Node.connect(:server@localhost)``,
``c "examples/client.ex"``, ``ExamplesClient.start``, ``ExamplesClient.push_message("How are
you?")``. Each handled message is logged; Ctrl-C (or SIGTERM) drains the pipeline and prints
``handled N, failed F, dropped D``. It is ``pybroadway serve`` with its default pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

try:
    import pybroadway  # noqa: F401 - installed (pip install -e .)
except ImportError:  # run from a clone without installing: use the clone's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pybroadway._arguments import check_command_line
from pybroadway._config import ConfigError
from pybroadway._hints import explain
from pybroadway._terminal import add_log_level
from pybroadway.cli import add_serve_arguments, serve, setup_logging
from pybroadway.errors import PyBroadwayError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_serve_arguments(parser)
    add_log_level(parser, "INFO")
    arguments = parser.parse_args()
    arguments.command = "serve"
    try:  # checked as `pybroadway serve` checks its flags
        check_command_line(arguments)
    except ConfigError as exc:
        parser.exit(2, f"broadway.py: {exc}\n")
    setup_logging(arguments.quiet, level=getattr(logging, arguments.log_level))
    try:
        print(asyncio.run(serve(arguments)), flush=True)
    except (PyBroadwayError, OSError) as exc:  # as `pybroadway serve`: one line, exit code 1
        sys.exit(f"broadway.py: {explain(exc)}")
