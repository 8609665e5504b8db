"""The command line's options (``serve``'s, shared with examples/broadway.py, and
``worker``'s), their check by the configuration file's schema (:func:`check_command_line`),
the distribution they ask for (:func:`distribution`: ``--proto-dist`` and
``--ssl-dist-optfile``, as the BEAM's ``-proto_dist`` and ``-ssl_dist_optfile``), and the run
of ``pybroadway worker``; :mod:`pybroadway.cli` dispatches."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib.util import find_spec
from typing import Any

from pybroadway._config import (
    SERVE_FLAG_OPTIONS,
    SUBSCRIBE_DEMAND,
    WORKERS,
    ConfigError,
    check_value,
    load_config,
)
from pybroadway._flag_options import (
    MAX_BUFFER,
    NODE,
    PROTO_DISTS,
    SERVE_DEFAULTS,
    TLS,
)
from pybroadway._hints import install_command, why_not_connected
from pybroadway.erldist import HandshakeError, Node, epmd
from pybroadway.erldist.tls import TlsSettings
from pybroadway.erldist.tls_options import TlsOptionsError, read_optfile
from pybroadway.gen_stage import parse_source
from pybroadway.otp_distribution import DEFAULT_NAME
from pybroadway.pipeline import Pipeline
from pybroadway.pipeline.options import MAX_CONCURRENCY, MAX_DEMAND, Option, OptionsError
from pybroadway.workers import (
    OnStarted,
    load_pipeline_class,
    log_for_front,
    read_cookie,
    run_worker,
)

_DISTRIBUTION = {"ssl_dist_optfile": TLS["optfile"], "proto_dist": TLS["proto_dist"]}
_DASHBOARD = {dest: SERVE_FLAG_OPTIONS[dest]  # serve's, whose [dashboard] table they are
              for dest in ("dashboard_port", "dashboard_host", "dashboard_token")}
#: Each command's flags, by their ``args`` attribute: the option of the file that checks them.
COMMAND_FLAGS: dict[str, dict[str, Option]] = {
    "serve": {**SERVE_FLAG_OPTIONS, "max_demand": SUBSCRIBE_DEMAND},
    "worker": {**{key: NODE[key] for key in ("sname", "cookie", "listen", "epmd_port",
                                             "ticktime")},
               "max_demand": WORKERS["max_demand"],
               "concurrency": SERVE_FLAG_OPTIONS["concurrency"],
               "partition": Option("non_neg_integer", "The partition this worker takes."),
               **_DISTRIBUTION, **_DASHBOARD},
    "ping": {**{key: NODE[key] for key in ("sname", "cookie", "epmd_port")}, **_DISTRIBUTION},
    "epmd": {"port": NODE["epmd_port"]},
}


def check_command_line(args: argparse.Namespace) -> None:
    """Check the flags of ``args.command`` as the file's keys are checked, then read
    ``--config``'s file into ``args`` (flags given win). Raises :class:`ConfigError` naming
    the flag, or the file and its key."""
    given = set()
    for dest, option in COMMAND_FLAGS.get(args.command, {}).items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        try:
            check_value(dest, option, value, ())
        except OptionsError as exc:
            raise ConfigError(f"invalid value for --{dest.replace('_', '-')}: {exc.reason}, "
                              f"got: {value!r}") from None
        given.add(dest)
    if getattr(args, "dashboard_port", None) is not None:
        missing = [name for name in ("aiohttp", "prometheus_client") if find_spec(name) is None]
        if missing:
            raise ConfigError(f"--dashboard-port needs {' and '.join(missing)}: "
                              + install_command("dashboard", " ".join(missing)))
    if args.command == "worker":  # a bad --pipeline is a bad command line, before any node
        try:
            load_pipeline_class(args.pipeline)
        except ValueError as exc:
            raise ConfigError(f"--pipeline {exc}") from None
    path = getattr(args, "config", None)
    if path:
        load_config(path).apply(args)
    resume_at = getattr(args, "resume_at", None)
    buffer_size = getattr(args, "buffer_size", None) or SERVE_DEFAULTS["buffer_size"]
    if resume_at is not None and resume_at >= buffer_size:
        reason = f"expected an integer less than the buffer size ({buffer_size:,})"
        if "resume_at" in given:
            raise ConfigError(f"invalid value for --resume-at: {reason}, got: {resume_at!r}")
        raise ConfigError(f"{path}: " + str(OptionsError(
            f"invalid value for :resume_at option: {reason}, got: {resume_at!r}",
            "resume_at", ("producer",), resume_at)))
    if getattr(args, "subscribe", None):  # checked now, used once the node runs
        subscriptions(args.subscribe, args.max_demand or SERVE_DEFAULTS["max_demand"])
    if hasattr(args, "proto_dist"):
        args.tls, args.ipv6 = distribution(args, given)
        if getattr(args, "listen", "") is None and (args.ipv6 or args.command == "worker"):
            args.listen = "::1" if args.ipv6 else "127.0.0.1"  # this host only, either way


def subscriptions(specs: Sequence[str] | None, max_demand: int) -> list[Any]:
    """``--subscribe`` values (``name@node``, optionally ``:max_demand=N,min_demand=M``) as
    GenStageProducer's ``subscribe_to`` entries; raises :class:`ConfigError` naming a bad
    one (a demand is bounded as ``--max-demand`` is)."""
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
            check_value("max_demand", SUBSCRIBE_DEMAND, options["max_demand"], ())
            parse_source((name, node, options))  # checks the demands
            entries.append((name, node, options))
        except OptionsError as exc:
            raise ConfigError(f"bad --subscribe {spec!r}: {exc.reason}") from None
        except ValueError as exc:
            raise ConfigError(f"bad --subscribe {spec!r}: {exc}") from None
    return entries


@asynccontextmanager
async def reaching(args: argparse.Namespace) -> AsyncIterator[tuple[Node, str | None]]:
    """A hidden node made as ``args`` say (``ping``'s and ``reload``'s options) and its
    connect to ``args.node``: ``(node, None)``, or ``(node, why it failed)`` in a few words."""
    async with Node(args.sname, cookie=args.cookie, epmd_port=args.epmd_port, hidden=True,
                    tls=getattr(args, "tls", None), ipv6=getattr(args, "ipv6", False)) as node:
        failure = None
        try:
            await node.connect(args.node, check=True)
        except (OSError, HandshakeError, epmd.EpmdError, TimeoutError) as exc:
            failure = why_not_connected(args.node, exc)
        yield node, failure


def distribution(args: argparse.Namespace, given: set[str]) -> tuple[TlsSettings | None, bool]:
    """``args``'s ``--proto-dist`` and ``--ssl-dist-optfile`` (from the flags ``given``, else
    from ``--config``'s ``[tls]``) as a Node's ``tls`` and ``ipv6``: the option file alone
    means ``inet_tls``; a TLS carrier without it, or it with a plain one, is a
    :class:`ConfigError`, as is a file that does not make TLS settings."""
    optfile = args.ssl_dist_optfile
    proto = args.proto_dist or ("inet_tls" if optfile is not None else "inet_tcp")
    over_tls, ipv6 = PROTO_DISTS[proto]
    names = {dest: (flag if dest in given or not getattr(args, "config", None)
                    else f"{args.config}: tls.{key}")
             for dest, flag, key in (("proto_dist", "--proto-dist", "proto_dist"),
                                     ("ssl_dist_optfile", "--ssl-dist-optfile", "optfile"))}
    if over_tls and optfile is None:
        raise ConfigError(f"{names['proto_dist']} {proto} needs the TLS options: "
                          f"--ssl-dist-optfile FILE (the BEAM's -ssl_dist_optfile)")
    if not over_tls and optfile is not None:
        raise ConfigError(f"{names['proto_dist']} {proto} and {names['ssl_dist_optfile']} "
                          f"{optfile} contradict each other: TLS options for a distribution "
                          f"without TLS (give inet_tls or inet6_tls, or no option file)")
    try:
        return (read_optfile(optfile) if optfile is not None else None), ipv6
    except TlsOptionsError as exc:
        raise ConfigError(str(exc)) from None


def distribution_flags(args: argparse.Namespace) -> list[str]:
    """The flags that give a worker its front's distribution (the option file by its
    absolute path: the worker reads it too)."""
    flags = []
    if getattr(args, "proto_dist", None) is not None:
        flags += ["--proto-dist", args.proto_dist]
    if getattr(args, "ssl_dist_optfile", None) is not None:
        flags += ["--ssl-dist-optfile", os.path.abspath(args.ssl_dist_optfile)]
    return flags


def add_distribution_arguments(parser: argparse.ArgumentParser) -> None:
    """``--proto-dist`` and ``--ssl-dist-optfile`` (serve, worker, ping)."""
    parser.add_argument("--proto-dist", choices=tuple(PROTO_DISTS), default=None,
                        help="the distribution's carrier, as the BEAM's -proto_dist: "
                             "inet_tcp (the default), inet6_tcp (IPv6), inet_tls or "
                             "inet6_tls (TLS: needs --ssl-dist-optfile)")
    parser.add_argument("--ssl-dist-optfile", default=None, metavar="FILE",
                        help="the TLS options, the file a BEAM takes with -ssl_dist_optfile "
                             "([{server, [...]}, {client, [...]}].); alone: inet_tls")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``serve`` (shared with examples/broadway.py)."""
    # Defaults are None, filled by apply_defaults: a flag given wins over --config's file,
    # which wins over the defaults.
    parser.add_argument("--mode", choices=("push", "pull"), help="default push")
    parser.add_argument("--sname", help="node name (name@host; default server@localhost)")
    parser.add_argument("--cookie", default=None, help="default: ~/.erlang.cookie")
    parser.add_argument("--listen", metavar="ADDRESS",
                        help="address the node listens on (default 127.0.0.1, ::1 over IPv6: "
                             "this host only)")
    parser.add_argument("--epmd-port", type=int, default=None,
                        help="default: $ERL_EPMD_PORT or 4369 (embedded EPMD if none runs)")
    parser.add_argument("--receiver-name",
                        help=f"the :global name clients look up (default {DEFAULT_NAME})")
    parser.add_argument("--overflow", choices=("block", "drop_oldest", "drop_newest"),
                        help="when the buffer is full (default block: lossless)")
    parser.add_argument("--request-atom", choices=("request_message", "pull_message"),
                        help="pull requests: request_message (the library's 0.1.0) or "
                             "pull_message (its last version)")
    parser.add_argument("--buffer-size", type=int,
                        help="messages the producer holds before it counts as full "
                             f"(default 10000, at most {MAX_BUFFER:,})")
    parser.add_argument("--resume-at", type=int, default=None,
                        help="buffered messages at which a full buffer has room again "
                             "(less than the buffer; default: half the buffer)")
    parser.add_argument("--pull-interval", type=float,
                        help="seconds before unanswered pull requests are asked again "
                             "(default 5)")
    parser.add_argument("--register-global", action=argparse.BooleanOptionalAction,
                        default=None, help="register the receiver in :global (the default); "
                                           "--no-register-global: locally only")
    parser.add_argument("--message-log-level", default=None,
                        choices=("DEBUG", "INFO", "WARNING"),
                        help="level of the per-message lines (default INFO; DEBUG with --quiet)")
    parser.add_argument("--concurrency", type=int,
                        help=f"processors (default 2, at most {MAX_CONCURRENCY:,})")
    parser.add_argument("--subscribe", action="append", metavar="NAME@NODE[:OPTIONS]",
                        help="feed the pipeline from the GenStage producer registered as NAME "
                             "on NODE instead of the receiver (repeatable; OPTIONS: "
                             "max_demand=N,min_demand=M)")
    parser.add_argument("--max-demand", type=int,
                        help="max_demand of each --subscribe without one (default 1000, "
                             f"at most {MAX_DEMAND:,})")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (needs "
                             f"{install_command('metrics', 'prometheus_client')})")
    parser.add_argument("--metrics-host", metavar="HOST",
                        help="address of the metrics endpoint (default 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="run the processors and batchers in N worker processes "
                             "(0: only workers that join with `pybroadway worker`; at most "
                             f"{WORKERS['count'].maximum}, 4 per CPU)")
    parser.add_argument("--redeliver", action=argparse.BooleanOptionalAction, default=None,
                        help="with --workers: hand the messages of a worker that went away to "
                             "another (at least once) instead of failing them")
    parser.add_argument("--ticktime", type=float, default=None, metavar="SECONDS",
                        help="the net ticktime: a silent peer is down after it (default 60)")
    add_distribution_arguments(parser)
    add_dashboard_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no per-message log lines")


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dashboard-port``, ``--dashboard-host`` and ``--dashboard-token`` (serve, worker)."""
    parser.add_argument("--dashboard-port", type=int, default=None, metavar="PORT",
                        help="serve a live dashboard at http://HOST:PORT/ (needs "
                             f"{install_command('dashboard', 'aiohttp prometheus_client')})")
    parser.add_argument("--dashboard-host", default=None, metavar="HOST",
                        help="address of the dashboard (default 127.0.0.1: this host only)")
    parser.add_argument("--dashboard-token", default=None, metavar="TOKEN",
                        help="a token the dashboard wants, as Authorization: Bearer TOKEN or "
                             "?token=TOKEN (default: $PYBROADWAY_DASHBOARD_TOKEN, else none)")


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``worker``."""
    parser.add_argument("--join", required=True, metavar="FRONT@HOST",
                        help="the node serving the pipeline (pybroadway serve's --sname)")
    parser.add_argument("--pipeline", required=True, metavar="MODULE:CLASS",
                        help="the front's Pipeline subclass, imported by module path")
    parser.add_argument("--cookie", default=None,
                        help="default: $PYBROADWAY_COOKIE, else ~/.erlang.cookie")
    parser.add_argument("--sname", default=None,
                        help="this node's name (default worker_<pid>@<the front's host>)")
    parser.add_argument("--name", default=None,
                        help="the pipeline's name on the front (default PyBroadway, serve's)")
    parser.add_argument("--listen", default=None, metavar="ADDRESS",
                        help="address this node listens on (default 127.0.0.1, ::1 over "
                             "IPv6: this host only; a visible worker on another host than its "
                             "front needs the address the cluster reaches it at)")
    parser.add_argument("--epmd-port", type=int, default=None)
    parser.add_argument("--max-demand", type=int, default=500,
                        help="messages asked of the front at a time (default 500, at "
                             f"most {MAX_DEMAND:,})")
    parser.add_argument("--concurrency", type=int, default=None,
                        help=f"processors (default: the front's; at most "
                             f"{MAX_CONCURRENCY:,})")
    parser.add_argument("--partition", type=int, default=None,
                        help="the partition this worker takes (partitioned pipelines)")
    parser.add_argument("--exit-with-front", action="store_true",
                        help="stop when the front's node goes down (else: wait for it)")
    parser.add_argument("--ticktime", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--hidden", action="store_true",
                        help="a hidden node, connected to the front only (default: visible, "
                             "meshed with the front's cluster, which must reach it)")
    add_distribution_arguments(parser)
    add_dashboard_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no per-message log lines")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="the least level logged (default INFO)")
    parser.add_argument("--output-to-front", action="store_true",
                        help="for a worker its front starts: stdout and stderr are pipes the "
                             "front relays (log records as lines it logs again; pybroadway's "
                             "own from WARNING unless DEBUG: the front speaks for them)")


def dashboard_starter(args: argparse.Namespace) -> OnStarted | None:
    """What starts ``--dashboard-port``'s dashboard on a pipeline and its node once they run
    (and returns what stops it), or None without the flag."""
    port = getattr(args, "dashboard_port", None)
    if port is None:
        return None

    async def start(pipeline: Pipeline, node: Node) -> Callable[[], Awaitable[None]]:
        from pybroadway.dashboard import start_dashboard  # the optional extra, checked

        dashboard = await start_dashboard(
            pipeline, node, port, getattr(args, "dashboard_host", None) or "127.0.0.1",
            token=args.dashboard_token or os.environ.get("PYBROADWAY_DASHBOARD_TOKEN") or None)
        logging.getLogger("pybroadway.dashboard").info(
            "dashboard at %s", dashboard.url.partition("?")[0])
        return dashboard.stop

    return start


def run_worker_command(args: argparse.Namespace) -> int:
    """Run ``pybroadway worker`` until SIGTERM/SIGINT; print what it did."""
    if args.output_to_front:
        log_for_front(getattr(logging, args.log_level))
    host = args.join.partition("@")[2]
    stats = asyncio.run(run_worker(
        join=args.join, pipeline=args.pipeline, name=args.name or "PyBroadway",
        sname=args.sname or f"worker_{os.getpid()}@{host}", cookie=read_cookie(args.cookie),
        listen=args.listen, epmd_port=args.epmd_port, max_demand=args.max_demand,
        partition=args.partition, concurrency=args.concurrency,
        exit_with_front=args.exit_with_front, hidden=args.hidden, ticktime=args.ticktime,
        tls=args.tls, ipv6=args.ipv6, on_started=dashboard_starter(args)))
    if not args.output_to_front:  # the front's stats have it
        print(f"handled {stats['handled']}, failed {stats['failed']}", flush=True)
    return 0
