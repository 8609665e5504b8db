"""``pybroadway serve --config pipeline.toml``: the pipeline, the connector and the node in a TOML
file, for what flags express badly (batchers, partitioning, rate limiting, context)::

    pipeline = "mymodule:Orders"          # module:Class of a Pipeline subclass
    partition_by = "mymodule:by_customer" # module:function, for every stage that sets none

    [node]
    sname = "server@localhost"
    cookie = "secret"

    [producer]                            # the connector: the names of serve's flags
    mode = "pull"
    buffer_size = 50000
    [producer.rate_limiting]
    allowed_messages = 1000
    interval = 1000

    [processors.default]
    concurrency = 4
    max_demand = 50

    [batchers.db]
    batch_size = 100
    batch_timeout = 1000

    [[subscribe]]                         # GenStage producers feed the pipeline instead
    name = "events"                       # of the receiver (as --subscribe events@app@host)
    node = "app@host"
    max_demand = 1000                     # optional, as min_demand

    [context]
    table = "orders"

    [metrics]                             # as --metrics-port and --metrics-host
    port = 9568

    [dashboard]                           # as --dashboard-port, -host and -token
    port = 8080

    [tls]                                 # distribution over TLS, as the BEAM's
    optfile = "ssl_dist.conf"             # -ssl_dist_optfile (relative: to this file)
    proto_dist = "inet6_tls"              # as -proto_dist (default inet_tls with optfile)

    [workers]                             # the processors and batchers in worker processes
    count = 2                             # as --workers (a [workers] table alone: 1)
    redeliver = true                      # as --redeliver
    max_demand = 500                      # and the other workers options but node

The workers run what the front runs: its processors, batchers, partition_by and context come
to them from the front (:mod:`pybroadway.workers`), not from the file or the class alone.

The file is checked with the pipeline's own schema (:mod:`pybroadway.pipeline.options`): a bad
key or value is named with its path, the value and what is allowed; so are ``[[subscribe]]``
tables, a ``pipeline`` that does not import, and nesting deeper than :data:`MAX_DEPTH`. Every
error is one line of bounded length (:class:`ConfigError`). A flag given on the command
line wins over the file; the file wins over the flags' defaults (:data:`SERVE_DEFAULTS`).

Every command's flags are checked by the same schema (:mod:`pybroadway._arguments`): a flag's
value is refused as the same key in the file would be (``invalid value for --workers:
expected at most 8, got: 100000``), with the bounds where a value costs processes or memory.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pybroadway._flag_options import (
    CONNECTOR,
    DASHBOARD,
    METRICS,
    NODE,
    SERVE_DEFAULTS,
    TLS,
)
from pybroadway._imports import import_path, load_pipeline
from pybroadway.errors import PyBroadwayError
from pybroadway.gen_stage import parse_source
from pybroadway.pipeline.options import MAX_DEMAND, SCHEMA, Option, OptionsError, validate
from pybroadway.workers import SCHEMA as WORKERS_SCHEMA

__all__ = [
    "CONFIG_HELP", "SERVE_FLAG_OPTIONS", "SUBSCRIBE_DEMAND", "WORKERS", "Config", "ConfigError",
    "apply_defaults", "check_value", "load_config",
]

_PRODUCER = SCHEMA["producer"].keys or {}
#: The workers options but the front's node (serve's own).
WORKERS: dict[str, Option] = {key: option for key, option in WORKERS_SCHEMA.items()
                              if key != "node"}
_PROCESSORS = (SCHEMA["processors"].keys or {})["default"]

FILE_SCHEMA: dict[str, Option] = {
    "pipeline": Option("string", "module:Class of a Pipeline subclass, as --pipeline."),
    "node": Option("keyword", "The node's options.", keys=NODE),
    "producer": Option("keyword", "The connector's options, and the producers' rate limit.",
                       keys={**CONNECTOR, "rate_limiting": _PRODUCER["rate_limiting"]}),
    "processors": Option("keyword", "The processors (only 'default').",
                         keys={"default": Option("keyword", _PROCESSORS.doc,
                                                 keys=_PROCESSORS.keys)}),
    **{key: SCHEMA[key] for key in ("batchers", "partition_by", "context", "shutdown", "name")},
    "workers": Option("keyword", "Run the processors and batchers in worker processes, as "
                      "--workers (count) and --redeliver; a [workers] table turns them on.",
                      keys=WORKERS),
    "metrics": Option("keyword", "The Prometheus endpoint, as --metrics-port.",
                      keys=METRICS),
    "tls": Option("keyword", "Distribution over TLS or IPv6.", keys=TLS),
    "dashboard": Option("keyword", "The live dashboard, as --dashboard-port.",
                        keys=DASHBOARD),
}

#: Flags of serve, by where they are in the file.
_FLAGS = {("node", key): key for key in NODE} | {("producer", key): key for key in CONNECTOR} \
    | {("processors", "default", "concurrency"): "concurrency"} \
    | {("workers", "count"): "workers", ("workers", "redeliver"): "redeliver"} \
    | {("metrics", key): f"metrics_{key}" for key in METRICS} \
    | {("dashboard", key): f"dashboard_{key}" for key in DASHBOARD} \
    | {("tls", "optfile"): "ssl_dist_optfile", ("tls", "proto_dist"): "proto_dist"}


def _option_at(place: tuple[str, ...]) -> Option:
    """The option at ``place`` (table names, then the key) in :data:`FILE_SCHEMA`."""
    schema = FILE_SCHEMA
    *tables, key = place
    for table in tables:
        schema = schema[table].keys or {}
    return schema[key]


#: The option of the file that checks each flag of serve, by its ``args`` attribute.
SERVE_FLAG_OPTIONS: dict[str, Option] = {dest: _option_at(place)
                                         for place, dest in _FLAGS.items()}

#: max_demand of a GenStage subscription (--max-demand, a ``[[subscribe]]`` table's).
SUBSCRIBE_DEMAND = Option("pos_integer", "Events asked of a producer at a time.",
                          default=SERVE_DEFAULTS["max_demand"], maximum=MAX_DEMAND)


#: The keys of one ``[[subscribe]]`` table.
SUBSCRIBE_KEYS = {"name": str, "node": str, "max_demand": int, "min_demand": int}
MAX_ATOM = 255  # characters in an atom: a producer's name, a node's

CONFIG_HELP = """\
--config FILE.toml holds what flags express badly; a flag given wins over the file:
  pipeline = "mymodule:Orders"            # as --pipeline
  partition_by = "mymodule:by_customer"   # an import path module:function
  [node]                                  # sname, cookie, listen, epmd_port, ticktime
  [producer]                              # mode, buffer_size, request_atom, ... as the flags
  [producer.rate_limiting]                # allowed_messages, interval (ms)
  [processors.default]                    # concurrency, min_demand, max_demand, ...
  [batchers.db]                           # batch_size, batch_timeout, concurrency, ...
  [[subscribe]]                           # name, node, max_demand, min_demand (GenStage)
  [context]                               # passed to every callback
  [workers]                               # count (as --workers), redeliver, max_demand, ...
  [metrics]                               # port, host (as --metrics-port, --metrics-host)
  [tls]                                   # optfile, proto_dist (as --ssl-dist-optfile, ...)
"""


#: The longest error line: a file can hold a huge value or a million unknown keys.
MAX_ERROR_CHARS = 1000
#: The deepest nesting of tables and arrays a file may have.
MAX_DEPTH = 32


class ConfigError(PyBroadwayError):
    """The configuration file cannot be read, or holds a bad key or value. Its text is one
    line of at most about :data:`MAX_ERROR_CHARS` characters: the middle of a longer one is
    left out (its start names the file, its end the table), control characters escaped."""

    def __init__(self, message: str) -> None:
        if len(message) > MAX_ERROR_CHARS:
            half = MAX_ERROR_CHARS // 2
            message = (f"{message[:half]} … ({len(message) - 2 * half:,} characters left "
                       f"out) … {message[-half:]}")
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))


@dataclass
class Config:
    """What the file says: ``flags`` by the names of serve's options (``args`` attributes),
    ``pipeline`` (module:Class or None), and ``options``: what else goes to the Pipeline."""

    path: str = ""
    flags: dict[str, Any] = field(default_factory=dict)
    pipeline: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def apply(self, args: argparse.Namespace) -> None:
        """Fill what the command line did not give (None) from the file. Raises
        :class:`ConfigError` if the file's pipeline, used for want of ``--pipeline``, does not
        import."""
        for dest, value in self.flags.items():
            if getattr(args, dest, None) is None:
                setattr(args, dest, value)
        if getattr(args, "pipeline", None) is None:
            if self.pipeline is not None:
                _check_pipeline(self.path, "pipeline", self.pipeline)
            args.pipeline = self.pipeline
        args.pipeline_options = self.options


def load_config(path: str) -> Config:
    """Read and check ``path``; raises :class:`ConfigError` naming the file and the key."""
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration {path}: {exc.strerror or exc}"
                          ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise ConfigError(f"{path} is not valid TOML: nested too deep (at most {MAX_DEPTH} "
                          f"levels)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    too_deep = _too_deep(raw)
    if too_deep is not None:
        raise ConfigError(f"{path}: {too_deep}: nested deeper than {MAX_DEPTH} levels")
    subscribe = _subscriptions(path, raw.pop("subscribe", None))
    try:
        _resolve_functions(raw)
        validate(raw, FILE_SCHEMA)
        node = _table(raw, ["node"]) or {}
        for key in _VALUE_CHECKS.keys() & node.keys():
            check_value(key, NODE[key], node[key], ("node",))
    except OptionsError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    workers_pipeline = (_table(raw, ["workers"]) or {}).get("pipeline")
    if workers_pipeline is not None:
        _check_pipeline(path, "workers.pipeline", workers_pipeline)
    config = Config(path=path, pipeline=raw.pop("pipeline", None))
    if subscribe is not None:
        config.flags["subscribe"] = subscribe
    for place, dest in _FLAGS.items():
        *outer, key = place
        table = _table(raw, outer)
        if table is not None and key in table:
            config.flags[dest] = table.pop(key)
    optfile = config.flags.get("ssl_dist_optfile")
    if optfile is not None:  # a path in a file is relative to that file
        config.flags["ssl_dist_optfile"] = os.path.join(os.path.dirname(path), optfile)
    for key in ("node", "tls", "metrics", "dashboard"):  # all flags
        raw.pop(key, None)
    for key, table in (("producer", _table(raw, ["producer"])),
                       ("processors", _table(raw, ["processors", "default"]))):
        if table == {}:  # nothing left for the pipeline but flags
            del raw[key]
    config.options = raw
    return config


def _subscriptions(path: str, tables: Any) -> list[str] | None:
    """``[[subscribe]]`` tables as ``--subscribe`` values (``name@node:max_demand=N,…``)."""
    if tables is None:
        return None
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: subscribe must be an array of tables ([[subscribe]])")
    specs = []
    for index, table in enumerate(tables):
        where = f"{path}: subscribe[{index}]"
        for key, value in table.items():
            kind = SUBSCRIBE_KEYS.get(key)
            if kind is None:
                raise ConfigError(f"{where}: unknown key {key!r}, valid keys are: "
                                  f"{', '.join(SUBSCRIBE_KEYS)}")
            if type(value) is not kind:
                raise ConfigError(f"{where}.{key}: invalid value {value!r}")
            low = int(key == "max_demand")
            if isinstance(value, int) and not low <= value <= MAX_DEMAND:
                raise ConfigError(f"{where}.{key}: invalid value {value!r}: expected an "
                                  f"integer from {low} to {MAX_DEMAND:,}")
        if "name" not in table or "node" not in table:
            raise ConfigError(f"{where}: name and node are required")
        name, node = table["name"], table["node"]
        if not 0 < len(name) <= MAX_ATOM or ":" in name or "@" in name:
            raise ConfigError(f"{where}.name: invalid value {name!r}: expected the name a "
                              f"producer is registered as (an atom, no ':' or '@')")
        short, _, host = node.partition("@")
        if len(node) > MAX_ATOM or not short or not host or ":" in node:
            raise ConfigError(f"{where}.node: invalid value {node!r}: expected a node name "
                              f"name@host (an atom, no ':')")
        demands = {key: table[key] for key in ("max_demand", "min_demand") if key in table}
        try:
            parse_source((name, node, {"max_demand": SERVE_DEFAULTS["max_demand"], **demands}))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        options = ",".join(f"{key}={value}" for key, value in demands.items())
        specs.append(f"{name}@{node}" + (f":{options}" if options else ""))
    return specs


def _node_name(value: str) -> str | None:
    alive, at, host = value.partition("@")
    if not alive or (at and not host) or "@" in host or len(value) > MAX_ATOM:
        return f"expected a node name, name@host (one '@', at most {MAX_ATOM} characters)"
    return None


def _cookie(value: str) -> str | None:
    if not value or len(value) > MAX_ATOM or max(map(ord, value)) > 0xFF:
        return f"expected a cookie of 1 to {MAX_ATOM} Latin-1 characters"
    return None


#: What the schema's types do not say of a node's name and its cookie (atoms, the
#: cookie hashed as Latin-1 in the handshake).
_VALUE_CHECKS: dict[str, Callable[[str], str | None]] = {"sname": _node_name,
                                                          "cookie": _cookie}


def check_value(key: str, option: Option, value: Any, path: tuple[str, ...]) -> None:
    """``value`` checked as the option ``key`` at ``path``; raises :class:`OptionsError`."""
    validate({key: value}, {key: option}, path)
    check = _VALUE_CHECKS.get(key)
    reason = None if check is None else check(value)
    if reason is not None:
        raise OptionsError(f"invalid value for :{key} option: {reason}, got: {value!r}",
                           key, path, value, reason=reason)


def _check_pipeline(path: str, key: str, spec: str) -> None:
    try:
        load_pipeline(spec)
    except ValueError as exc:
        raise ConfigError(f"{path}: {key}: {spec!r}: {exc}") from None


def _too_deep(raw: dict[str, Any]) -> str | None:
    """The dotted key of a value nested deeper than :data:`MAX_DEPTH`, or None (a walk, not a
    recursion: what is too deep for the limit must not be too deep for the check)."""
    stack: list[tuple[str, Any, int]] = [(str(key), value, 1) for key, value in raw.items()]
    while stack:
        where, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return where
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}", item, depth + 1) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{index}]", item, depth + 1)
                         for index, item in enumerate(value))
    return None


def apply_defaults(args: argparse.Namespace) -> None:
    """Give serve's options that are still None (not given, not in a file) their default."""
    for dest, value in SERVE_DEFAULTS.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)


def _table(raw: dict[str, Any], keys: list[str]) -> dict[str, Any] | None:
    table: Any = raw
    for key in keys:
        table = table.get(key) if isinstance(table, dict) else None
    return table if isinstance(table, dict) else None


def _resolve_functions(raw: dict[str, Any]) -> None:
    """Replace every ``partition_by = "module:function"`` with the function."""
    places: list[tuple[dict[str, Any] | None, tuple[str, ...]]] = [
        (raw, ()), (_table(raw, ["processors", "default"]), ("processors", "default"))]
    batchers = raw.get("batchers")
    if isinstance(batchers, dict):
        places += [(sub, ("batchers", name)) for name, sub in batchers.items()
                   if isinstance(sub, dict)]
    for table, path in places:
        if table is not None and isinstance(table.get("partition_by"), str):
            table["partition_by"] = _function(table["partition_by"], path)


def _function(spec: str, path: tuple[str, ...]) -> Callable[..., Any]:
    def bad(why: str) -> OptionsError:
        return OptionsError(f"invalid value for :partition_by option: {why}, got: {spec!r}",
                            "partition_by", path, spec)

    try:
        function = import_path(spec, "function")
    except ValueError as exc:
        raise bad(str(exc)) from None
    if not callable(function):
        raise bad("expected a function")
    return function  # type: ignore[no-any-return]

