"""The options of ``serve``'s flags that ``--config`` has as tables (``[node]``,
``[producer]``, ``[metrics]``, ``[tls]``, ``[dashboard]``): their types, bounds, defaults and
docs, one definition for the flag, the file and the reference page."""

from __future__ import annotations

from typing import Any

from pybroadway.otp_distribution import DEFAULT_NAME
from pybroadway.pipeline.options import Option

__all__ = ["CONNECTOR", "DASHBOARD", "MAX_BUFFER", "MAX_PORT", "METRICS", "NODE", "PROTO_DISTS",
           "SERVE_DEFAULTS", "TLS"]

#: The most messages a producer may hold: a client can fill what it allows.
MAX_BUFFER = 1_000_000
MAX_PORT = 65_535

#: The defaults of ``serve``'s flags, applied to those neither given nor in the file.
SERVE_DEFAULTS: dict[str, Any] = {
    "mode": "push", "sname": "server@localhost", "listen": "127.0.0.1",
    "receiver_name": DEFAULT_NAME, "overflow": "block", "request_atom": "request_message",
    "buffer_size": 10_000, "pull_interval": 5.0, "register_global": True, "concurrency": 2,
    "max_demand": 1000, "metrics_host": "127.0.0.1",
}

NODE: dict[str, Option] = {
    "sname": Option("string", "The node's name (name@host), as --sname."),
    "cookie": Option("string", "The cookie, as --cookie.", default_doc="~/.erlang.cookie"),
    "listen": Option("string", "The address the node listens on, as --listen."),
    "epmd_port": Option("pos_integer", "The EPMD port, as --epmd-port.",
                        default_doc="$ERL_EPMD_PORT or 4369", maximum=MAX_PORT),
    "ticktime": Option("pos_number", "Seconds after which a silent peer is down, as "
                       "--ticktime.", default_doc="60"),
}

#: The BEAM's -proto_dist values: (over TLS, over IPv6).
PROTO_DISTS = {"inet_tcp": (False, False), "inet6_tcp": (False, True),
               "inet_tls": (True, False), "inet6_tls": (True, True)}

TLS: dict[str, Option] = {
    "optfile": Option("string", "The TLS options, the BEAM's -ssl_dist_optfile, as "
                      "--ssl-dist-optfile (relative to the configuration file)."),
    "proto_dist": Option("string", "The distribution's carrier, as --proto-dist.",
                         choices=tuple(PROTO_DISTS),
                         default_doc="inet_tls with an optfile, else inet_tcp"),
}

#: OtpDistributionProducer's options (but ``node``), by the names of its keyword arguments.
CONNECTOR: dict[str, Option] = {
    "mode": Option("string", "push: data becomes a message whatever the demand; pull: clients "
                   "are asked for as much as the processors want.", choices=("push", "pull")),
    "receiver_name": Option("string", "The :global (and local) name clients look up."),
    "overflow": Option("string", "When buffer_size messages wait: block stops reading from the "
                       "clients' connections, so BEAM senders wait and nothing is lost; "
                       "drop_newest and drop_oldest discard, counted and logged at most once "
                       "a second.", choices=("block", "drop_oldest", "drop_newest")),
    "request_atom": Option("string", "The pull request cast to clients: pull_message for "
                           "clients of the library's later versions.",
                           choices=("request_message", "pull_message")),
    "buffer_size": Option("pos_integer", "Messages the producer holds before overflow "
                          "applies.", maximum=MAX_BUFFER),
    "resume_at": Option("non_neg_integer", "Buffered messages at which reading resumes; "
                        "less than buffer_size.", default_doc="buffer_size // 2"),
    "pull_interval": Option("pos_number", "Seconds after which an unanswered pull request is "
                            "asked again."),
    "register_global": Option("boolean", "Register the receiver in :global."),
    "message_log_level": Option("string", "Level of the per-message log lines "
                                "(push_message: ...).", choices=("DEBUG", "INFO", "WARNING")),
}

METRICS: dict[str, Option] = {
    "port": Option("pos_integer", "The port of http://HOST:PORT/metrics, as --metrics-port.",
                   maximum=MAX_PORT),
    "host": Option("string", "The address it listens on, as --metrics-host.",
                   default_doc="127.0.0.1"),
}

DASHBOARD: dict[str, Option] = {
    "port": Option("pos_integer", "The port of the live dashboard, http://HOST:PORT/, as "
                   "--dashboard-port.", maximum=MAX_PORT),
    "host": Option("string", "The address it listens on, as --dashboard-host.",
                   default_doc="127.0.0.1"),
    "token": Option("string", "The token it wants, as --dashboard-token.",
                    default_doc="$PYBROADWAY_DASHBOARD_TOKEN, else none"),
}
