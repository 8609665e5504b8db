"""GenStage both ways: a pipeline fed by the Elixir producer ``{:events, :"app@localhost"}``
squares each number and hands the squares to Elixir consumers of ``{:results, :"py@localhost"}``.

    python examples/gen_stage.py [--cookie secret]

Run it, then in ``iex --sname app@localhost --cookie secret`` start a producer registered as
``:events`` and a consumer subscribed to ``{:results, :"py@localhost"}`` (README, "GenStage").
Backpressure goes all the way: with no Elixir consumer, ``results`` fills its buffer (1,000),
the pipeline stops taking, and the Elixir producer is asked for nothing more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from pybroadway.cli import setup_logging
from pybroadway.erldist import Node
from pybroadway.gen_stage import GenStageProducer, expose, forward
from pybroadway.pipeline import BatchInfo, Message, Pipeline


class Squares(Pipeline):
    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        return message.update_data(lambda n: n * n)

    async def handle_batch(self, batcher: Any, messages: list[Message], batch_info: BatchInfo,
                           context: Any) -> list[Message]:
        return await forward(context["results"], messages)  # waits for the consumers' demand


async def main(cookie: str) -> None:
    async with Node("py@localhost", cookie=cookie) as node:
        results = await expose(node, "results", buffer_size=1000)
        pipeline = Squares(
            producer={"module": (GenStageProducer, {
                "node": node, "subscribe_to": [("events", "app@localhost", {"max_demand": 10})]})},
            processors={"default": {"concurrency": 2}},
            batchers={"default": {"batch_size": 10}},
            context={"results": results})
        async with pipeline:
            await asyncio.Event().wait()  # until Ctrl-C


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cookie", default="secret")
    setup_logging()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args().cookie))
