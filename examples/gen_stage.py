"""GenStage both ways: a pipeline fed by the Elixir producer ``{:events, :"app@localhost"}``
squares each number and hands the squares to Elixir consumers of ``{:results, :"py@localhost"}``.

    python examples/gen_stage.py [--cookie secret] [--sname py@localhost]

Run it, then in ``iex --sname app@localhost --cookie secret`` start a producer registered as
``:events`` and a consumer subscribed to ``{:results, :"py@localhost"}`` (docs/guides/genstage.md).
Backpressure goes all the way: with no Elixir consumer, ``results`` fills its buffer (1,000),
the pipeline stops taking, and the Elixir producer is asked for nothing more.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

try:
    import pybroadway  # noqa: F401 - installed (pip install -e .)
except ImportError:  # run from a clone without installing: use the clone's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pybroadway._hints import explain
from pybroadway.cli import setup_logging
from pybroadway.erldist import Node
from pybroadway.errors import PyBroadwayError
from pybroadway.gen_stage import GenStageProducer, expose, forward
from pybroadway.pipeline import BatchInfo, Message, Pipeline


class Squares(Pipeline):
    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        return message.update_data(lambda n: n * n)

    async def handle_batch(self, batcher: Any, messages: list[Message], batch_info: BatchInfo,
                           context: Any) -> list[Message]:
        return await forward(context["results"], messages)  # waits for the consumers' demand


async def main(sname: str, cookie: str) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with Node(sname, cookie=cookie) as node:
        results = await expose(node, "results", buffer_size=1000)
        pipeline = Squares(
            producer={"module": (GenStageProducer, {
                "node": node, "subscribe_to": [("events", "app@localhost", {"max_demand": 10})]})},
            processors={"default": {"concurrency": 2}},
            batchers={"default": {"batch_size": 10}},
            context={"results": results})
        async with pipeline:
            await stop.wait()  # Ctrl-C or SIGTERM


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sname", default="py@localhost", help="this node's name")
    parser.add_argument("--cookie", default="secret")
    arguments = parser.parse_args()
    setup_logging()
    try:
        asyncio.run(main(arguments.sname, arguments.cookie))
    except (PyBroadwayError, OSError) as exc:  # the name taken, no EPMD, ...
        sys.exit(f"gen_stage.py: {explain(exc)}")
