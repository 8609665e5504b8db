"""``pybroadway epmd serve|names|port-please NAME|kill``: run the embedded EPMD in the
foreground, or ask an EPMD (pybroadway's or Erlang's) for its names, for one node, or to
stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from pybroadway._terminal import add_log_level, setup_logging
from pybroadway.erldist import EmbeddedEpmd, epmd
from pybroadway.runtime import raise_fd_limit

epmd_log = logging.getLogger("pybroadway.epmd")


EPMD_COMMANDS = {
    "serve": "run the embedded EPMD in the foreground (until Ctrl-C, SIGTERM or `kill`)",
    "names": "list the nodes registered with an EPMD (pybroadway's or Erlang's)",
    "port-please": "look one node up",
    "kill": "ask an EPMD to stop (like `epmd -kill`)",
}


def add_epmd_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``epmd`` command: one subcommand per entry of :data:`EPMD_COMMANDS`."""
    actions = parser.add_subparsers(dest="epmd_command", required=True,
                                    metavar="{" + ",".join(EPMD_COMMANDS) + "}")
    for name, text in EPMD_COMMANDS.items():
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--host", default="127.0.0.1",
                            help="address to listen on / epmd host to ask (default 127.0.0.1)")
        action.add_argument("--port", type=int, default=None,
                            help="EPMD port (default $ERL_EPMD_PORT or 4369)")
        action.add_argument("-v", "--verbose", action="store_true",
                            help="debug logging (--log-level DEBUG)")
        add_log_level(action, None)
        if name == "port-please":
            action.add_argument("name", help="node name (short, or name@host)")
        if name == "serve":
            action.add_argument("--relaxed-command-check", action="store_true",
                                help="obey kill while nodes are registered, and stop NAME "
                                     "(like epmd -relaxed_command_check)")


def run_epmd(args: argparse.Namespace) -> int:
    """Run ``pybroadway epmd …``; returns the exit code. EPMD errors propagate."""
    level = args.log_level or ("DEBUG" if args.verbose else "INFO")
    setup_logging(level=getattr(logging, level))
    port = args.port if args.port is not None else epmd.default_epmd_port()
    if args.epmd_command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_epmd(args.host, port, args.relaxed_command_check))
        return 0
    if args.epmd_command == "names":
        listed = asyncio.run(epmd.names(args.host, port))
        print(f"epmd: up and running on port {port} with data:")
        for name, node_port in listed:
            print(f"name {name} at port {node_port}")
        return 0
    if args.epmd_command == "kill":
        if not asyncio.run(epmd.kill(args.host, port)):
            raise epmd.EpmdError(f"epmd at {args.host}:{port} refused to stop: nodes are "
                                 f"registered (it must run with -relaxed_command_check)")
        print("Killed")
        return 0
    address = asyncio.run(epmd.port_please(args.name, args.host, port))
    if address is None:
        print(f"{args.name}: not registered", file=sys.stderr)
        return 1
    print(f"{address.name} port {address.port} type {chr(address.node_type)} "
          f"versions {address.lowest}-{address.highest}")
    return 0


async def _serve_epmd(host: str, port: int, relaxed_command_check: bool) -> None:
    raise_fd_limit()
    server = EmbeddedEpmd(relaxed_command_check=relaxed_command_check)
    await server.start(host, port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Also when started in the background, where SIGINT is ignored by default.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, _stop_on_signal, server, sig)
    try:
        await server.wait_closed()
    finally:
        await server.close()


def _stop_on_signal(server: EmbeddedEpmd, sig: signal.Signals) -> None:
    epmd_log.info("%s received, stopping", sig.name)
    asyncio.get_running_loop().create_task(server.close())
