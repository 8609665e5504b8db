"""The ``pybroadway`` command: ``serve`` a pipeline to BEAM clients, run an ``epmd``, ``ping``.

    pybroadway serve [--pipeline mymodule:MyPipeline] [--mode push|pull]
                     [--sname server@localhost] [--cookie C] [--quiet] [--config FILE.toml]
                     [--subscribe NAME@NODE[:max_demand=N,min_demand=M] ...] [--max-demand N]
                     [--workers N [--redeliver]] [--ticktime SECONDS]
    pybroadway worker --join FRONT@HOST --pipeline mymodule:MyPipeline [--cookie C] [--sname S]
                      [--listen ADDRESS] [--hidden]
    pybroadway epmd serve|names|port-please NAME|kill [--host H] [--port P] [-v]
    pybroadway ping NODE [--cookie C]        pong, or pang (why: cookie, not registered, ...)

``serve`` starts a node (and an embedded EPMD when none runs), registers the receiver in
``:global`` as ``off_broadway_otp_distribution_receiver``, and runs the pipeline until SIGINT or
SIGTERM; then it drains and prints ``handled N, failed F, dropped D``. While it is the
terminal's foreground job, a status line shows messages/s, handled and failed messages,
buffered messages and connected clients.

With ``--subscribe`` (repeatable), the pipeline is fed by GenStage producers instead of the
receiver: ``--subscribe events@app@host`` subscribes to the producer registered as ``events``
on the node ``app@host`` (``--max-demand``, default 1000, or per producer
``events@app@host:max_demand=500``), through :class:`pybroadway.gen_stage.GenStageProducer`.

With ``--workers N`` the processors (and batchers) run in N worker processes the server
starts and supervises (:mod:`pybroadway.workers`); the producer and the acknowledgements stay
in the server. ``pybroadway worker --join server@host --pipeline mod:Class`` runs one more
worker, on this host or another, for the server's pipeline.

``epmd`` runs the embedded EPMD in the foreground (``serve``), or asks an EPMD (pybroadway's or
Erlang's) for its ``names``, for one node (``port-please``), or to stop (``kill``).

``--config`` reads batchers, partitioning, rate limiting, context and any flag's option from
a TOML file (:mod:`pybroadway._config`); a flag given wins over the file.

Exit codes: 0 on success; 1 (after one line on stderr) if something fails, or if ``ping``
answers pang; 2 for a bad command line or configuration file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pybroadway import _imports as imports
from pybroadway._arguments import (
    add_serve_arguments,
    add_worker_arguments,
    check_command_line,
    run_worker_command,
)
from pybroadway._config import CONFIG_HELP, ConfigError, apply_defaults
from pybroadway._hints import explain, why_not_connected
from pybroadway.erldist import EmbeddedEpmd, HandshakeError, Node, NodeDown, epmd
from pybroadway.errors import PyBroadwayError
from pybroadway.gen_stage import GenStageProducer, parse_source
from pybroadway.otp_distribution import OtpDistributionProducer, message_struct
from pybroadway.pipeline import Message, Pipeline
from pybroadway.runtime import tune_gc
from pybroadway.term import loggable
from pybroadway.workers import WorkerFront

log = logging.getLogger("pybroadway.serve")
message_log = logging.getLogger("pybroadway.serve.messages")  # one line per handled message
epmd_log = logging.getLogger("pybroadway.epmd")


class LoggingPipeline(Pipeline):
    """The default pipeline of ``serve``: logs each message as ``handled: %Broadway.Message{…}``
    (on the ``pybroadway.serve.messages`` logger, silenced by ``--quiet``) and acknowledges
    it."""

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        if message_log.isEnabledFor(logging.INFO):
            message_log.info("handled: %s", loggable(message_struct(message)))
        return message


@dataclass
class Summary:
    """What a ``serve`` run did, printed as its last line."""

    handled: int
    failed: int
    dropped: int

    def __str__(self) -> str:
        return f"handled {self.handled}, failed {self.failed}, dropped {self.dropped}"


def load_pipeline(spec: str) -> type[Pipeline]:
    """``--pipeline module:Class``: the class (see :func:`pybroadway._imports.load_pipeline`),
    or the command ends with one line saying why."""
    try:
        return imports.load_pipeline(spec)
    except ValueError as exc:
        raise SystemExit(f"--pipeline {spec}: {exc}") from None


def raise_fd_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit: every connection and
    registration is a file, and the default soft limit (often 1,024) is soon reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # not allowed here: keep what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.debug("open files: soft limit raised from %d to %d", soft, hard)


def serve_workers(args: argparse.Namespace, table: dict[str, Any] | None
                  ) -> dict[str, Any] | None:
    """The workers options of serve: --config's ``[workers]`` table under ``--workers`` (count)
    and ``--redeliver``; None when neither asks for workers."""
    count = getattr(args, "workers", None)
    if count is None and table is None:
        return None
    workers = dict(table or {})
    if count is not None:
        workers["count"] = count
    redeliver = getattr(args, "redeliver", None)
    if redeliver is not None:
        workers["redeliver"] = redeliver
    workers.setdefault("pipeline", getattr(args, "pipeline", None))
    return workers


async def serve(args: argparse.Namespace, pipeline_class: type[Pipeline] = LoggingPipeline
                ) -> Summary:
    """Run the server until SIGINT/SIGTERM (or ``args.stop``, an asyncio.Event, is set).
    ``args.pipeline_options`` (from --config) go to the pipeline too."""
    apply_defaults(args)
    options = dict(getattr(args, "pipeline_options", None) or {})
    raise_fd_limit()
    metrics = _metrics_module() if getattr(args, "metrics_port", None) is not None else None
    stop: asyncio.Event = getattr(args, "stop", None) or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Node(args.sname, cookie=args.cookie, epmd_port=args.epmd_port,
                    host=args.listen, ticktime=getattr(args, "ticktime", None) or 60.0) as node:
        workers = serve_workers(args, options.pop("workers", None))
        if workers is not None:
            options["offload"] = (WorkerFront, {**workers, "node": node})
        processors = options.pop("processors", {}).get("default", {})
        producer_options = options.pop("producer", {})  # rate_limiting
        subscribe_to = subscriptions(getattr(args, "subscribe", None), args.max_demand)
        module: tuple[type, dict[str, Any]] = (GenStageProducer, {
            "node": node, "subscribe_to": subscribe_to}) if subscribe_to else (
            OtpDistributionProducer, {
                "node": node, "mode": args.mode, "overflow": args.overflow,
                "receiver_name": args.receiver_name, "request_atom": args.request_atom,
                "buffer_size": args.buffer_size, "resume_at": args.resume_at,
                "pull_interval": args.pull_interval, "register_global": args.register_global,
                "message_log_level": _message_log_level(args)})
        pipeline = pipeline_class(**{"name": "PyBroadway", **options},
                                  producer={**producer_options, "module": module},
                                  processors={"default": {**processors,
                                                          "concurrency": args.concurrency}})
        await pipeline.start()
        metrics_server = None if metrics is None else await metrics.start_metrics_server(
            pipeline, node, args.metrics_port, host=args.metrics_host)
        producer = pipeline.producers[0]
        if subscribe_to:
            log.info("%s runs the pipeline on %d GenStage producer%s (Ctrl-C stops)",
                     node.name.name, len(subscribe_to), "" if len(subscribe_to) == 1 else "s")
        else:
            log.info("%s serves %s in %s mode (Ctrl-C stops)", node.name.name,
                     args.receiver_name, args.mode)
        status = (loop.create_task(_status_line(pipeline, producer))
                  if sys.stderr.isatty() else None)
        stopped = loop.create_task(stop.wait())
        down = loop.create_task(node.wait_down())
        failure = loop.create_task(pipeline.wait_failure())
        await asyncio.wait((stopped, down, failure), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if status is not None:
            status.cancel()
            if in_foreground(sys.stderr):
                sys.stderr.write("\r\x1b[K")  # the summary takes the status line's place
        await pipeline.stop()
        if metrics_server is not None:
            await metrics_server.stop()
        stats = pipeline.stats()
        summary = Summary(stats["handled"], stats["failed"], getattr(producer, "dropped", 0))
        if down.done() and down.result() is not None:
            log.error("%s", summary)
            raise NodeDown(node.name, down.result())
        down.cancel()
        if failure.done() and not failure.cancelled():  # stop() cancels the wait
            log.error("%s", summary)
            raise WorkersFailed(failure.result())
        failure.cancel()
        return summary


class WorkersFailed(PyBroadwayError):
    """The pipeline's workers were restarted more often than allowed: serve stopped."""


def in_foreground(stream: Any) -> bool:
    """Whether ``stream`` is a terminal whose foreground process group is this process's
    (not so after ``serve &`` or Ctrl-Z then ``bg``: then the status line stays off the
    terminal the user is typing in)."""
    try:
        return bool(stream.isatty()) and os.tcgetpgrp(stream.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def _metrics_module() -> Any:
    """pybroadway.metrics, imported only when asked for: it needs prometheus_client."""
    try:
        return importlib.import_module("pybroadway.metrics")
    except ImportError:
        raise SystemExit("pybroadway serve: --metrics-port needs prometheus_client: "
                         "pip install 'pybroadway[metrics]'") from None


async def _status_line(pipeline: Pipeline, producer: Any) -> None:
    """Redraw, each second, one line of rates and counts on the terminal (only while the
    process is in the foreground: it may be sent to the background and back)."""
    while True:
        await asyncio.sleep(1.0)
        if not in_foreground(sys.stderr):
            continue
        stats = pipeline.stats()
        receiver = getattr(producer, "receiver", None)
        clients = len(receiver.clients if receiver is not None
                      else producer.subscriber.subscriptions)
        workers = stats.get("workers")
        shown = "" if workers is None else \
            f"{len(workers)} worker{'' if len(workers) == 1 else 's'}  "
        sys.stderr.write(f"\r\x1b[K{stats['rate']:,.0f} msg/s  {stats['handled']:,} handled  "
                         f"{stats['failed']:,} failed  {stats['buffered']:,} buffered  "
                         f"{clients} client{'' if clients == 1 else 's'}  {shown}")
        sys.stderr.flush()


async def ping(args: argparse.Namespace) -> str:
    """``net_adm:ping/1`` from a hidden Python node: ``pong``, or ``pang (why)``."""
    async with Node(args.sname, cookie=args.cookie, epmd_port=args.epmd_port,
                    hidden=True) as node:
        try:
            await node.connect(args.node, check=True)
        except (OSError, HandshakeError, epmd.EpmdError, TimeoutError) as exc:
            return f"pang ({why_not_connected(args.node, exc)})"
        return "pong"


def subscriptions(specs: Sequence[str] | None, max_demand: int) -> list[Any]:
    """``--subscribe`` values (``name@node``, optionally ``:max_demand=N,min_demand=M``) as
    GenStageProducer's ``subscribe_to`` entries; raises SystemExit naming a bad one."""
    entries: list[Any] = []
    for spec in specs or ():
        target, _, extra = spec.partition(":")
        name, _, node = target.partition("@")
        options: dict[str, int] = {"max_demand": max_demand}
        try:
            if not name or "@" not in node:
                raise ValueError("expected NAME@NODE, the node as name@host")
            for item in filter(None, extra.split(",")):
                key, _, value = item.partition("=")
                if key not in ("max_demand", "min_demand"):
                    raise ValueError(f"unknown option {key!r} (max_demand, min_demand)")
                options[key] = int(value)
            parse_source((name, node, options))  # checks the demands
            entries.append((name, node, options))
        except ValueError as exc:
            raise SystemExit(f"pybroadway serve: bad --subscribe {spec!r}: {exc}") from None
    return entries


def _message_log_level(args: argparse.Namespace) -> int:
    if args.message_log_level is not None:
        return int(getattr(logging, args.message_log_level))
    return logging.DEBUG if args.quiet else logging.INFO


LOG_FORMAT = "%(asctime)s.%(msecs)03d [%(levelname)s] %(message)s"
"""The one shape of pybroadway's log lines (``05:19:07.271 [INFO] node … connected``): the
server's, the EPMD's, the example client's."""


def setup_logging(quiet: bool = False, level: int = logging.INFO) -> None:
    """Log to stderr from ``level`` on, in :data:`LOG_FORMAT`; ``quiet`` leaves out the
    per-message lines only."""
    if quiet:
        message_log.setLevel(logging.WARNING)
    # On a terminal each log line first clears the status line, which is redrawn after it.
    clear = "\r\x1b[K" if sys.stderr.isatty() else ""
    logging.basicConfig(level=level, format=clear + LOG_FORMAT, datefmt="%H:%M:%S")


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
        action.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        if name == "port-please":
            action.add_argument("name", help="node name (short, or name@host)")
        if name == "serve":
            action.add_argument("--relaxed-command-check", action="store_true",
                                help="obey kill while nodes are registered, and stop NAME "
                                     "(like epmd -relaxed_command_check)")


def run_epmd(args: argparse.Namespace) -> int:
    """Run ``pybroadway epmd …``; returns the exit code. EPMD errors propagate."""
    setup_logging(level=logging.DEBUG if args.verbose else logging.INFO)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pybroadway`` command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="pybroadway", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve", help="serve a pipeline to BEAM clients", epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve_parser.add_argument("--pipeline", default=None,
                              help="module:Class of a Pipeline subclass (default: log each)")
    serve_parser.add_argument("--config", metavar="FILE.toml",
                              help="pipeline, connector and node options in a TOML file")
    add_serve_arguments(serve_parser)
    add_epmd_arguments(commands.add_parser("epmd", help="run or query an EPMD",
                                           description="run or query an EPMD"))
    add_worker_arguments(commands.add_parser(
        "worker", help="run a pipeline's processors for a serving node",
        description="run a pipeline's processors and batchers for the node that serves it"))
    ping_parser = commands.add_parser("ping", help="ping a node: pong or pang")
    ping_parser.add_argument("node")
    ping_parser.add_argument("--sname", default="pybroadway_ping@localhost")
    ping_parser.add_argument("--cookie", default=None)
    ping_parser.add_argument("--epmd-port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        check_command_line(args)
    except ConfigError as exc:  # a bad file is a bad command line: exit code 2, as argparse's
        print(f"pybroadway {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except (PyBroadwayError, OSError) as exc:
        # Expected failures (no EPMD, port taken, name in use, ...): one line, no traceback.
        print(f"pybroadway {args.command}: {explain(exc)}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "epmd":
        return run_epmd(args)
    if args.command == "ping":
        setup_logging(level=logging.ERROR)
        answer = asyncio.run(ping(args))
        print(answer)
        return 0 if answer == "pong" else 1
    tune_gc()  # serve and worker run streams
    if args.command == "worker":
        setup_logging(args.quiet, level=getattr(logging, args.log_level))
        return run_worker_command(args)
    setup_logging(args.quiet)
    pipeline_class = load_pipeline(args.pipeline) if args.pipeline else LoggingPipeline
    print(asyncio.run(serve(args, pipeline_class)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
