"""A Python client of the walkthrough: pushes messages to the server, or answers its pulls.

    python examples/client.py --server server@localhost push "How are you?" [--count N]
    python examples/client.py --server server@localhost answer ["I'm alive!"]

What goes wrong (no server, a wrong cookie, no EPMD, the name taken) is one line on stderr
and exit code 1. ``-v`` logs what the node does.
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

from pybroadway._hints import explain, why_not_connected
from pybroadway.cli import setup_logging
from pybroadway.erldist import EpmdError, HandshakeError, Node
from pybroadway.errors import PyBroadwayError
from pybroadway.otp_distribution import DEFAULT_NAME, Client

log = logging.getLogger("client")

#: Seconds without a pull request after which ``answer`` says the server may be in push mode.
NO_REQUEST_WARNING = 5.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sname", default="pyclient@localhost", help="this node's name")
    parser.add_argument("--server", default="server@localhost", help="the server's node")
    parser.add_argument("--cookie", default=None, help="default: ~/.erlang.cookie")
    parser.add_argument("--epmd-port", type=int, default=None)
    parser.add_argument("--global", dest="use_global", action="store_true",
                        help="find the receiver through :global instead of {name, server}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the node does")
    sub = parser.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push", help="push messages")
    push.add_argument("text", nargs="?", default="How are you?")
    push.add_argument("--count", type=int, default=1)
    answer = sub.add_parser("answer", help="answer pull requests until Ctrl-C")
    answer.add_argument("text", nargs="?", default="I'm alive!")
    return parser.parse_args()


async def main(args: argparse.Namespace) -> str | None:
    """Run the command; returns None, or why it failed (one line)."""
    async with Node(args.sname, cookie=args.cookie, epmd_port=args.epmd_port) as node:
        try:
            await node.connect(args.server, check=True)
        except (OSError, HandshakeError, EpmdError, TimeoutError) as exc:
            return why_not_connected(args.server, exc)
        receiver = None if args.use_global else (DEFAULT_NAME, args.server)
        if args.command == "push":
            client = await Client.start(node, receiver=receiver)
            for _ in range(args.count):
                client.push_message(args.text)
            print(f"pushed {args.count}")
            return None
        await answer(node, receiver, args)
        return None


async def answer(node: Node, receiver: tuple[str, str] | None, args: argparse.Namespace
                 ) -> None:
    """Answer pull requests with ``args.text`` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    answered = 0

    def on_request() -> str:
        nonlocal answered
        answered += 1
        return str(args.text)

    await Client.start(node, receiver=receiver, on_request=on_request)
    print(f"answering the pull requests of {args.server} (Ctrl-C stops)", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), NO_REQUEST_WARNING)
    except TimeoutError:
        if answered == 0:  # say so once, and keep answering if requests come later
            log.warning("no pull request from %s in %g s: is it in pull mode "
                        "(`serve --mode pull`)?", args.server, NO_REQUEST_WARNING)
        await stop.wait()
    print(f"answered {answered}")


if __name__ == "__main__":
    arguments = parse_args()
    setup_logging(level=logging.INFO if arguments.verbose else logging.WARNING)
    if not arguments.verbose:  # a failed handshake is said in our one line
        logging.getLogger("pybroadway.erldist.handshake").setLevel(logging.ERROR)
    try:
        failure = asyncio.run(main(arguments))
    except (PyBroadwayError, OSError) as exc:  # the node could not start, no receiver, ...
        failure = explain(exc)
    except KeyboardInterrupt:  # Ctrl-C before the answer loop took it over
        sys.exit(130)
    if failure is not None:
        sys.exit(f"client.py: {failure}")
