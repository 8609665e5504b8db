"""A Python client of the walkthrough: pushes messages to the server, or answers its pulls.

    python examples/client.py --server server@localhost push "How are you?" [--count N]
    python examples/client.py --server server@localhost answer ["I'm alive!"]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

try:
    import pybroadway  # noqa: F401 - installed (pip install -e .)
except ImportError:  # run from a clone without installing: use the clone's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pybroadway.cli import setup_logging
from pybroadway.erldist import Node
from pybroadway.otp_distribution import DEFAULT_NAME, Client


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sname", default="pyclient@localhost", help="this node's name")
    parser.add_argument("--server", default="server@localhost", help="the server's node")
    parser.add_argument("--cookie", default=None, help="default: ~/.erlang.cookie")
    parser.add_argument("--epmd-port", type=int, default=None)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log connections and registrations too")
    parser.add_argument("--global", dest="use_global", action="store_true",
                        help="find the receiver through :global instead of {name, server}")
    sub = parser.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push", help="push messages")
    push.add_argument("text", nargs="?", default="How are you?")
    push.add_argument("--count", type=int, default=1)
    answer = sub.add_parser("answer", help="answer pull requests until Ctrl-C")
    answer.add_argument("text", nargs="?", default="I'm alive!")
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    async with Node(args.sname, cookie=args.cookie, epmd_port=args.epmd_port) as node:
        if not await node.connect(args.server):
            raise SystemExit(f"could not connect to {args.server}")
        receiver = None if args.use_global else (DEFAULT_NAME, args.server)
        if args.command == "push":
            client = await Client.start(node, receiver=receiver)
            for _ in range(args.count):
                client.push_message(args.text)
            print(f"pushed {args.count}")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Client.start(node, receiver=receiver, on_request=lambda: args.text)
        await stop.wait()


if __name__ == "__main__":
    arguments = parse_args()
    setup_logging(level=logging.INFO if arguments.verbose else logging.WARNING)
    asyncio.run(main(arguments))
