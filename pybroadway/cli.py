"""The ``pybroadway`` command: ``serve`` a pipeline to BEAM clients, run an ``epmd``, ``ping``.

    pybroadway serve [--pipeline mymodule:MyPipeline] [--mode push|pull]
                     [--sname server@localhost] [--cookie C] [--quiet] [--config FILE.toml]
                     [--subscribe NAME@NODE[:max_demand=N,min_demand=M] ...] [--max-demand N]
                     [--workers N [--redeliver]] [--ticktime SECONDS]
                     [--dashboard-port PORT [--dashboard-host H] [--dashboard-token T]]
    pybroadway worker --join FRONT@HOST --pipeline mymodule:MyPipeline [--cookie C] [--sname S]
                      [--listen ADDRESS] [--hidden]
    pybroadway reload NODE [--cookie C]      the serving NODE's pipeline code, reloaded in place
    pybroadway epmd serve|names|port-please NAME|kill [--host H] [--port P] [-v]
    pybroadway ping NODE [--cookie C]        pong, or pang (why: cookie, not registered, ...)

``serve``, ``worker`` and ``ping`` take ``--proto-dist inet_tcp|inet6_tcp|inet_tls|inet6_tls``
and ``--ssl-dist-optfile FILE``, as the BEAM's ``-proto_dist`` and ``-ssl_dist_optfile``: the
distribution over IPv6 or TLS (:mod:`pybroadway.erldist.tls_options`).
    pybroadway --version                     the version, and which codec runs

Every command takes ``--log-level DEBUG|INFO|WARNING|ERROR``. ``pybroadway`` with no command
prints this help on stderr and exits 2, as a usage error.

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

SIGHUP to ``serve``, or ``pybroadway reload server@host``, imports the user's pipeline
modules afresh and reloads the pipeline in place (:mod:`pybroadway._reload`): the node, the
receiver and its clients stay; a version that fails is refused and the running one goes on.

``--dashboard-port`` (``serve`` and ``worker``) serves a live dashboard of the pipeline and
its node (:mod:`pybroadway.dashboard`, the ``dashboard`` extra).

``epmd`` runs the embedded EPMD in the foreground (``serve``), or asks an EPMD (pybroadway's or
Erlang's) for its ``names``, for one node (``port-please``), or to stop (``kill``).

``--config`` reads batchers, partitioning, rate limiting, context and any flag's option from
a TOML file (:mod:`pybroadway._config`); a flag given wins over the file.

Exit codes: 0 on success; 1 (after one line on stderr) if something fails, or if ``ping``
answers pang; 130 for a Ctrl-C before ``serve`` is ready (one line); 2 for a bad command
line, configuration file or ``--pipeline``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pybroadway import __version__
from pybroadway import _imports as imports
from pybroadway._arguments import (
    add_distribution_arguments,
    add_serve_arguments,
    add_worker_arguments,
    check_command_line,
    dashboard_starter,
    distribution_flags,
    reaching,
    run_worker_command,
    subscriptions,
)
from pybroadway._config import CONFIG_HELP, ConfigError, apply_defaults
from pybroadway._epmd_command import add_epmd_arguments, run_epmd
from pybroadway._flag_options import SERVE_DEFAULTS
from pybroadway._hints import explain, install_command
from pybroadway._reload import NAME as RELOAD_NAME
from pybroadway._reload import Reloader, ReloadServer, UserModules
from pybroadway._reload import ask as ask_reload
from pybroadway._terminal import StatusLine, add_log_level, setup_logging
from pybroadway.erldist import ChildSpec, Node, NodeDown
from pybroadway.errors import PyBroadwayError
from pybroadway.gen_stage import GenStageProducer
from pybroadway.otp_distribution import OtpDistributionProducer, message_struct
from pybroadway.pipeline import Message, Pipeline
from pybroadway.runtime import raise_fd_limit, tune_gc
from pybroadway.term import IMPLEMENTATION, loggable
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
    """``--pipeline module:Class``: the class (see :func:`pybroadway._imports.load_pipeline`);
    a ConfigError (a bad command line) saying why it is not one."""
    try:
        return imports.load_pipeline(spec)
    except ValueError as exc:
        raise ConfigError(f"--pipeline {spec}: {exc}") from None


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
    flags = distribution_flags(args)
    if flags:  # the workers' nodes speak the front's distribution (TLS, IPv6)
        workers["extra_args"] = [*flags, *workers.get("extra_args", ())]
    return workers


def make_pipeline(args: argparse.Namespace, node: Node,
                  pipeline_class: type[Pipeline] | None = None) -> Pipeline:
    """The pipeline serve runs on ``node``: ``pipeline_class`` (default: ``--pipeline``'s, or
    :class:`LoggingPipeline`) with the options of ``args`` (``--config`` applied, defaults
    given), whose ``version`` is, unless the class or the file names one, a hash of the
    user's modules."""
    if pipeline_class is None:
        pipeline_class = load_pipeline(args.pipeline) if args.pipeline else LoggingPipeline
    options = dict(getattr(args, "pipeline_options", None) or {})
    modules = UserModules()
    if pipeline_class.version is None and modules.current():
        options.setdefault("version", modules.digest())
    workers = serve_workers(args, options.pop("workers", None))
    if workers is not None:
        options["offload"] = (WorkerFront, {**workers, "node": node})
    processors = options.pop("processors", {}).get("default", {})
    producer_options = options.pop("producer", {})  # rate_limiting
    subscribe_to = subscriptions(getattr(args, "subscribe", None),
                                 args.max_demand or SERVE_DEFAULTS["max_demand"])
    module: tuple[type, dict[str, Any]] = (GenStageProducer, {
        "node": node, "subscribe_to": subscribe_to}) if subscribe_to else (
        OtpDistributionProducer, {
            "node": node, "mode": args.mode, "overflow": args.overflow,
            "receiver_name": args.receiver_name, "request_atom": args.request_atom,
            "buffer_size": args.buffer_size, "resume_at": args.resume_at,
            "pull_interval": args.pull_interval, "register_global": args.register_global,
            "message_log_level": _message_log_level(args)})
    return pipeline_class(**{"name": "PyBroadway", **options},
                          producer={**producer_options, "module": module},
                          processors={"default": {**processors,
                                                  "concurrency": args.concurrency}})


def _prepare(args: argparse.Namespace) -> None:
    """Apply ``--config`` (read again) and the defaults to a copy of the command line."""
    check_command_line(args)
    apply_defaults(args)


async def serve(args: argparse.Namespace, pipeline_class: type[Pipeline] = LoggingPipeline
                ) -> Summary:
    """Run the server until SIGINT/SIGTERM (or ``args.stop``, an asyncio.Event, is set);
    SIGHUP reloads the pipeline's code (:mod:`pybroadway._reload`). ``args.pipeline_options``
    (from --config) go to the pipeline too; ``args.command_line``, the arguments before
    ``--config`` was applied, is what a reload applies the file to again."""
    command_line = getattr(args, "command_line", None) or argparse.Namespace(
        **{**vars(args), "command": "serve"})
    apply_defaults(args)
    raise_fd_limit()
    metrics = _metrics_module() if getattr(args, "metrics_port", None) is not None else None
    stop: asyncio.Event = getattr(args, "stop", None) or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Node(args.sname, cookie=args.cookie, epmd_port=args.epmd_port,
                    host=args.listen, ticktime=getattr(args, "ticktime", None) or 60.0,
                    tls=getattr(args, "tls", None), ipv6=getattr(args, "ipv6", False)) as node:
        pipeline = make_pipeline(args, node, pipeline_class)
        await pipeline.start()
        reloader = Reloader(pipeline, command_line, args, _prepare,
                            lambda new_args: make_pipeline(new_args, node))
        supervisor = node.supervisor
        assert supervisor is not None  # the node has started
        await supervisor.start_child(ChildSpec(
            id="reload server", start=lambda: ReloadServer(reloader), name=RELOAD_NAME))
        reloads: set[asyncio.Task[None]] = set()

        def reload() -> None:
            task = loop.create_task(reloader.reload_logged())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, reload)
        metrics_server = None if metrics is None else await metrics.start_metrics_server(
            pipeline, node, args.metrics_port, host=args.metrics_host)
        start_dashboard = dashboard_starter(args)
        stop_dashboard = None if start_dashboard is None else await start_dashboard(
            pipeline, node)
        producer = pipeline.producers[0]
        if isinstance(producer, GenStageProducer):
            count = len(producer.sources)
            log.info("%s runs the pipeline on %d GenStage producer%s (Ctrl-C stops)",
                     node.name.name, count, "" if count == 1 else "s")
        else:
            log.info("%s serves %s in %s mode (Ctrl-C stops)", node.name.name,
                     args.receiver_name, args.mode)
        status = (loop.create_task(StatusLine(pipeline, producer, stop).run())
                  if sys.stderr.isatty() else None)
        stopped = loop.create_task(stop.wait())
        down = loop.create_task(node.wait_down())
        failure = loop.create_task(pipeline.wait_failure())
        await asyncio.wait((stopped, down, failure), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        await _drain(pipeline, loop)
        if status is not None:
            status.cancel()
            await asyncio.wait((status,))  # the summary takes the status line's place
        if metrics_server is not None:
            await metrics_server.stop()
        if stop_dashboard is not None:
            await stop_dashboard()
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


async def _drain(pipeline: Pipeline, loop: asyncio.AbstractEventLoop) -> None:
    """Stop the pipeline gracefully; a second SIGINT or SIGTERM stops it at once, and says how
    many messages that failed."""
    cut: list[int] = []  # the failed count when the drain was cut

    def stop_now() -> None:
        if not cut:
            cut.append(pipeline.stats()["failed"])
            loop.create_task(pipeline.stop_now())

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_now)
    await pipeline.stop()
    if cut:
        left = pipeline.stats()["failed"] - cut[0]
        log.warning("stopped at once: %d message%s left acknowledged as failed", left,
                    "" if left == 1 else "s")


def _metrics_module() -> Any:
    """pybroadway.metrics, imported only when asked for: it needs prometheus_client."""
    try:
        return importlib.import_module("pybroadway.metrics")
    except ImportError:
        raise SystemExit("pybroadway serve: --metrics-port needs prometheus_client: "
                         + install_command("metrics", "prometheus_client")) from None


async def ping(args: argparse.Namespace) -> str:
    """``net_adm:ping/1`` from a hidden Python node: ``pong``, or ``pang (why)``."""
    async with reaching(args) as (_, failure):
        return "pong" if failure is None else f"pang ({failure})"


def _message_log_level(args: argparse.Namespace) -> int:
    if args.message_log_level is not None:
        return int(getattr(logging, args.message_log_level))
    return logging.DEBUG if args.quiet else logging.INFO


def add_ping_arguments(parser: argparse.ArgumentParser, command: str = "ping") -> None:
    """The options of ``ping`` (and ``reload``, which reaches a node as ping does)."""
    parser.add_argument("node", help=f"the node to {command}, as name@host")
    parser.add_argument("--sname", default=f"pybroadway_{command}@localhost",
                        help=f"this (hidden) node's name (default "
                             f"pybroadway_{command}@localhost)")
    parser.add_argument("--cookie", default=None, help="default: ~/.erlang.cookie")
    parser.add_argument("--epmd-port", type=int, default=None,
                        help="default: $ERL_EPMD_PORT or 4369 (embedded EPMD if none runs)")
    add_distribution_arguments(parser)
    add_log_level(parser, "ERROR")


def add_reload_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reload``: ping's, and how long to wait for the outcome."""
    add_ping_arguments(parser, "reload")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="how long to wait for the outcome (default 120: the old version "
                             "finishes what it holds first)")


def version() -> str:
    """``pybroadway --version``: the version, and which codec runs (see README, Two commands)."""
    return f"pybroadway {__version__} ({IMPLEMENTATION} codec)"


def build_parser() -> argparse.ArgumentParser:
    """The ``pybroadway`` command's argument parser (the documentation's CLI reference is
    rendered from it)."""
    parser = argparse.ArgumentParser(prog="pybroadway", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version())
    commands = parser.add_subparsers(dest="command")
    serve_parser = commands.add_parser(
        "serve", help="serve a pipeline to BEAM clients", epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve_parser.add_argument("--pipeline", default=None,
                              help="module:Class of a Pipeline subclass (default: log each)")
    serve_parser.add_argument("--config", metavar="FILE.toml",
                              help="pipeline, connector and node options in a TOML file")
    add_serve_arguments(serve_parser)
    add_log_level(serve_parser, "INFO")
    add_epmd_arguments(commands.add_parser("epmd", help="run or query an EPMD",
                                           description="run or query an EPMD"))
    add_worker_arguments(commands.add_parser(
        "worker", help="run a pipeline's processors for a serving node",
        description="run a pipeline's processors and batchers for the node that serves it"))
    add_reload_arguments(commands.add_parser(
        "reload", help="reload a serving node's pipeline code in place",
        description="reload the pipeline code of a running `pybroadway serve` in place, as "
                    "SIGHUP does, and say the outcome: the new version, or why it was "
                    "refused (exit code 1; the old version still runs)"))
    add_ping_arguments(commands.add_parser(
        "ping", help="ping a node: pong or pang",
        description="ping a node as net_adm:ping/1 does, from a hidden node: prints pong, or "
                    "pang and why (exit code 1)"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pybroadway`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a usage error, as argparse's: the help, on stderr, exit code 2
        parser.print_help(sys.stderr)
        return 2
    if args.command in ("serve", "worker"):
        tune_gc()  # they run streams (before the user's modules are imported)
    if args.command == "serve":  # a reload applies the file to the command line again
        args.command_line = argparse.Namespace(**vars(args))
    try:
        if getattr(args, "config", None):
            imports.look_beside(args.config)
        check_command_line(args)
        pipeline_class = load_pipeline(args.pipeline) if (
            args.command == "serve" and args.pipeline) else LoggingPipeline
    except ConfigError as exc:  # a bad file is a bad command line: exit code 2, as argparse's
        print(f"pybroadway {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(args, pipeline_class)
    except (PyBroadwayError, OSError) as exc:
        # Expected failures (no EPMD, port taken, name in use, ...): one line, no traceback.
        print(f"pybroadway {args.command}: {explain(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before serve's own handler is in place (or in ping)
        print(f"pybroadway {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, pipeline_class: type[Pipeline]) -> int:
    if args.command == "epmd":
        return run_epmd(args)
    if args.command == "reload":
        setup_logging(level=getattr(logging, args.log_level))
        reloaded, said = asyncio.run(ask_reload(args))
        if not reloaded:
            print(f"pybroadway reload: {said}", file=sys.stderr)
            return 1
        print(f"reloaded: version {said} handles messages", flush=True)
        return 0
    if args.command == "ping":
        setup_logging(level=getattr(logging, args.log_level))
        answer = asyncio.run(ping(args))
        print(answer)
        return 0 if answer == "pong" else 1
    if args.command == "worker":
        setup_logging(args.quiet, level=getattr(logging, args.log_level))
        return run_worker_command(args)
    setup_logging(args.quiet, level=getattr(logging, args.log_level))
    print(asyncio.run(serve(args, pipeline_class)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
