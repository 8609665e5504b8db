"""The Python server of the walkthrough: a node whose pipeline BEAM clients feed.

    python examples/broadway.py --mode push [--sname server@localhost] [--cookie C] [--quiet]

Then, from ``iex --sname client@localhost``: ``Node.connect(:server@localhost)``,
``c "examples/client.ex"``, ``ExamplesClient.start``, ``ExamplesClient.push_message("How are
you?")``. Ctrl-C drains the pipeline and prints ``handled N, failed F, dropped D``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from pybroadway.dist import Node
from pybroadway.otp_distribution import OtpDistributionProducer, message_struct
from pybroadway.pipeline import Message, Pipeline
from pybroadway.term import inspect

log = logging.getLogger("examples.broadway")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("push", "pull"), default="push")
    parser.add_argument("--sname", default="server@localhost", help="node name (name@host)")
    parser.add_argument("--cookie", default=None, help="default: ~/.erlang.cookie")
    parser.add_argument("--epmd-port", type=int, default=None)
    parser.add_argument("--overflow", choices=("block", "drop_oldest", "drop_newest"),
                        default="block")
    parser.add_argument("--quiet", action="store_true", help="no per-message log lines")
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def handle_message(processor: str, message: Message, context: Any) -> Message:
        if not args.quiet:
            log.info("handled: %s", inspect(message_struct(message)))
        return message

    async with Node(args.sname, cookie=args.cookie, epmd_port=args.epmd_port) as node:
        level = logging.INFO if not args.quiet else logging.DEBUG
        pipeline = Pipeline(
            name="ExamplesBroadway",
            handle_message=handle_message,
            producer={"module": (OtpDistributionProducer, {
                "node": node, "mode": args.mode, "overflow": args.overflow,
                "message_log_level": level})},
            processors={"default": {"concurrency": 1 if args.mode == "pull" else 2}},
        )
        await pipeline.start()
        log.info("%s is up in %s mode; waiting for clients (Ctrl-C to stop)", node.name.name,
                 args.mode)
        await stop.wait()
        await pipeline.stop()
        stats = pipeline.stats()
        producer = pipeline.producers[0]
        dropped = getattr(producer, "dropped", 0)
        print(f"handled {stats['handled']}, failed {stats['failed']}, dropped {dropped}",
              flush=True)


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(level=logging.WARNING if arguments.quiet else logging.INFO,
                        format="%(asctime)s [%(levelname)s] %(message)s")
    asyncio.run(main(arguments))
