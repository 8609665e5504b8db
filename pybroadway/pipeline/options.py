"""The pipeline's options: one declarative schema that validates them and documents them.

Names are Broadway's. Errors read like Broadway's (NimbleOptions) messages, naming the key,
the path to it, the value and what was expected, e.g.::

    invalid value for :concurrency option: expected positive integer, got: 0
    (in options [:processors, :default])

:func:`docs` renders the schema (descriptions and defaults) as text; it is appended to the
docstring of :class:`~pybroadway.pipeline.Pipeline`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from pybroadway.errors import ArgumentError

from ._producer import Producer

__all__ = ["MAX_CONCURRENCY", "MAX_DEMAND", "SCHEMA", "Option", "OptionsError", "docs",
           "validate"]

#: The most instances a stage may run: each is a task with its own queue, and a careless
#: ``concurrency=10**8`` would take all the memory before the pipeline starts.
MAX_CONCURRENCY = 10_000
#: The most messages a stage may ask for at a time: what it asks for, it holds.
MAX_DEMAND = 100_000


class OptionsError(ArgumentError):
    """A pipeline option is invalid. ``key``, ``keys_path`` and ``value`` say which and why;
    ``reason`` is what a bad value was expected to be (``expected positive integer``), empty
    when the key itself is wrong."""

    def __init__(self, message: str, key: str, keys_path: tuple[str, ...], value: Any, *,
                 reason: str = "") -> None:
        suffix = f" (in options {_show_path(keys_path)})" if keys_path else ""
        super().__init__(message + suffix)
        self.key = key
        self.keys_path = keys_path
        self.value = value
        self.reason = reason


def _atom(name: Any) -> str:
    return f":{name}" if isinstance(name, str) and name.isidentifier() else repr(name)


def _show_path(path: tuple[str, ...]) -> str:
    return "[" + ", ".join(_atom(part) for part in path) + "]"


_MISSING: Any = object()


@dataclass(frozen=True)
class Option:
    """One option of the schema.

    ``type`` names a check in ``_TYPES``; ``choices``, if given, are the only values allowed;
    ``maximum`` bounds a number (a value that costs processes or memory);
    ``keys`` is the schema of a nested dict of options; with ``named`` each key of the dict is
    a user-chosen name whose value follows ``keys``.
    ``default`` may be a zero-argument callable (``default_factory``) described by
    ``default_doc``.
    """

    type: str
    doc: str
    default: Any = None
    required: bool = False
    keys: dict[str, Option] | None = None
    named: bool = False
    default_factory: Callable[[], Any] | None = None
    default_doc: str | None = field(default=None)
    choices: tuple[Any, ...] | None = None
    maximum: int | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def module_and_options(declared: Any) -> tuple[Any, Mapping[str, Any]]:
    """A module declared as ``Module`` or ``(Module, {options})``, as ``(Module, options)``
    (a producer, an offload)."""
    if isinstance(declared, tuple) and len(declared) == 2 and isinstance(declared[1], Mapping):
        return declared[0], declared[1]
    return declared, {}


def _is_offload_module(value: Any) -> bool:
    module = module_and_options(value)[0]
    return isinstance(module, type) and callable(getattr(module, "validate_options", None))


def _is_producer_module(value: Any) -> bool:
    module = module_and_options(value)[0]
    return isinstance(module, type) and issubclass(module, Producer)


_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "pos_integer": (lambda v: _is_int(v) and v > 0, "expected positive integer"),
    "non_neg_integer": (lambda v: _is_int(v) and v >= 0, "expected non negative integer"),
    "string": (lambda v: isinstance(v, str), "expected string"),
    "boolean": (lambda v: isinstance(v, bool), "expected boolean"),
    "pos_number": (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        and v > 0,
        "expected positive number",
    ),
    "function": (callable, "expected a function"),
    "producer_module": (
        _is_producer_module,
        "expected a Producer subclass or a tuple (Producer subclass, dict of its options)",
    ),
    "transformer": (
        lambda v: isinstance(v, tuple) and len(v) == 2 and callable(v[0]),
        "expected a tuple (function, options), the function called as function(event, options)",
    ),
    "executor": (
        lambda v: v == "thread" or isinstance(v, Executor),
        "expected None, 'thread' or a concurrent.futures.Executor",
    ),
    "offload_module": (
        _is_offload_module,
        "expected an offload class (with validate_options) or a tuple (class, dict of its "
        "options)",
    ),
    "keyword": (lambda v: isinstance(v, Mapping), "expected a dict of options"),
    "any": (lambda v: True, ""),
}

_DEMAND = {
    "min_demand": Option(
        "non_neg_integer",
        "Processors ask again once the messages they asked for and did not yet handle fall to "
        "this many. Must be less than max_demand.",
        default_doc="max_demand // 2",
    ),
    "max_demand": Option(
        "pos_integer",
        "Most messages a processor asks a producer for at a time.",
        default=10,
        maximum=MAX_DEMAND,
    ),
}

_PARTITION_BY = Option(
    "function",
    "partition_by(message) -> int. Messages with the same result are handled by the same "
    "processor (or batch processor), in order.",
)

_EXECUTOR = Option(
    "executor",
    "Run the (plain-function) callbacks of this stage in an executor instead of the event "
    "loop: 'thread' for a thread pool sized to concurrency, or your own Executor.",
)

#: The pipeline's options: what ``Pipeline(**options)`` and ``serve --config`` accept.
SCHEMA: dict[str, Option] = {
    "name": Option("string", "The pipeline's name, used in stage names and telemetry.",
                   default_doc="the class name"),
    "producer": Option(
        "keyword",
        "The producer stage.",
        required=True,
        keys={
            "module": Option(
                "producer_module",
                "The Producer subclass, or (subclass, dict of keyword arguments for it).",
                required=True,
            ),
            "concurrency": Option("pos_integer", "Number of producer instances.", default=1,
                                  maximum=MAX_CONCURRENCY),
            "transformer": Option(
                "transformer",
                "(function, options): turns each event the producer emits into a Message.",
            ),
            "rate_limiting": Option(
                "keyword",
                "Limit how many messages all the producers together emit per interval.",
                keys={
                    "allowed_messages": Option(
                        "pos_integer", "Messages allowed per interval.", required=True
                    ),
                    "interval": Option(
                        "pos_integer", "The interval, in milliseconds.", required=True
                    ),
                },
            ),
        },
    ),
    "processors": Option(
        "keyword",
        "The processors; only one, named 'default', as in Broadway.",
        required=True,
        keys={
            "default": Option(
                "keyword",
                "The processors calling handle_message.",
                required=True,
                keys={
                    "concurrency": Option(
                        "pos_integer",
                        "Number of processors.",
                        default_factory=lambda: 2 * (os.cpu_count() or 1),
                        default_doc="2 * the number of CPUs",
                        maximum=MAX_CONCURRENCY,
                    ),
                    **_DEMAND,
                    "partition_by": _PARTITION_BY,
                    "executor": _EXECUTOR,
                },
            )
        },
    ),
    "batchers": Option(
        "keyword",
        "Batchers by name; messages go to the one named by Message.batcher.",
        default_factory=dict,
        default_doc="{} (no batchers)",
        named=True,
        keys={
            "concurrency": Option("pos_integer", "Number of batch processors.", default=1,
                                  maximum=MAX_CONCURRENCY),
            "batch_size": Option("pos_integer", "Most messages in a batch.", default=100),
            "batch_timeout": Option(
                "pos_integer",
                "Milliseconds to wait for a batch to fill before handling it anyway.",
                default=1000,
            ),
            "partition_by": _PARTITION_BY,
            "executor": _EXECUTOR,
        },
    ),
    "partition_by": Option(
        "function", "partition_by for the processors and every batcher that sets none."
    ),
    "context": Option("any", "Passed as `context` to every callback."),
    "shutdown": Option(
        "pos_integer",
        "Milliseconds a graceful stop may take; what is left then is acknowledged as failed.",
        default=30000,
    ),
    "max_restarts": Option(
        "non_neg_integer",
        "Stage crashes allowed within max_seconds (each is restarted, what it held fails); "
        "one more and the pipeline stops (wait_failure() says why).",
        default=3,
    ),
    "max_seconds": Option("pos_number", "See max_restarts.", default=5),
    "offload": Option(
        "offload_module",
        "Run the processing (processors and batchers) elsewhere, through an offload declared "
        "as (Module, {its options}) (see pipeline.Offload); the producers and the "
        "acknowledgements stay here. Module validates its own options.",
    ),
    "version": Option("string", "The version of the code, which stats() reports and a "
                      "reload (Pipeline.reload) changes.",
                      default_doc="a hash of the file that defines the class"),
}


def validate(options: Mapping[str, Any], schema: dict[str, Option] = SCHEMA,
             path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check ``options`` against ``schema``; return them with every default filled in.

    Raises :class:`OptionsError` on the first problem.
    """
    unknown = [key for key in options if key not in schema]
    if unknown:
        valid = ", ".join(_atom(key) for key in schema)
        shown = ", ".join(_atom(key) for key in unknown)
        raise OptionsError(
            f"unknown options [{shown}], valid options are: [{valid}]", unknown[0], path, None
        )
    result: dict[str, Any] = {}
    for key, option in schema.items():
        if key in options and not (options[key] is None and not option.required):
            result[key] = _validate_value(key, options[key], option, path)
        elif option.required:
            received = ", ".join(_atom(k) for k in options)
            raise OptionsError(
                f"required {_atom(key)} option not found, received options: [{received}]",
                key, path, None,
            )
        elif option.default_factory is not None:
            result[key] = option.default_factory()
        else:
            result[key] = option.default
    if "min_demand" in schema:
        _check_demand(result, path)
    return result


def _check_demand(result: dict[str, Any], path: tuple[str, ...]) -> None:
    max_demand, min_demand = result["max_demand"], result["min_demand"]
    if min_demand is None:
        result["min_demand"] = max_demand // 2
    elif min_demand >= max_demand:
        reason = f"expected an integer less than :max_demand ({max_demand})"
        raise OptionsError(
            f"invalid value for :min_demand option: {reason}, got: {min_demand!r}",
            "min_demand", path, min_demand, reason=reason,
        )


def _validate_value(key: str, value: Any, option: Option, path: tuple[str, ...]) -> Any:
    check, expected = _TYPES[option.type]
    if not check(value):
        raise _invalid(key, value, expected, path)
    if option.choices is not None and value not in option.choices:
        shown = ", ".join(repr(choice) for choice in option.choices)
        raise _invalid(key, value, f"expected one of [{shown}]", path)
    if option.maximum is not None and value > option.maximum:
        raise _invalid(key, value, f"expected at most {option.maximum:,}", path)
    if option.keys is None:
        return value
    inner = (*path, key)
    if option.named:
        return {name: validate(sub, option.keys, (*inner, name))
                for name, sub in _named_entries(key, value, path)}
    return validate(value, option.keys, inner)


def _invalid(key: str, value: Any, reason: str, path: tuple[str, ...]) -> OptionsError:
    return OptionsError(f"invalid value for {_atom(key)} option: {reason}, got: {value!r}",
                        key, path, value, reason=reason)


def _named_entries(key: str, value: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for name, sub in value.items():
        if not isinstance(sub, Mapping):
            raise OptionsError(
                f"invalid value for {_atom(name)} option: expected a dict of options, "
                f"got: {sub!r}",
                name, (*path, key), sub,
            )
        yield name, sub


def docs(schema: dict[str, Option] = SCHEMA, indent: int = 0) -> str:
    """Render ``schema`` as an indented list: name, description, default, nested options."""
    lines = []
    pad = "  " * indent
    for key, option in schema.items():
        if option.required:
            note = "Required."
        elif option.default_doc is not None:
            note = f"Default: {option.default_doc}."
        else:
            note = f"Default: {option.default!r}."
        if option.maximum is not None:
            note += f" At most {option.maximum:,}."
        if option.choices is not None:
            note += " One of " + ", ".join(repr(choice) for choice in option.choices) + "."
        lines.append(f"{pad}* ``{key}`` — {option.doc} {note}")
        if option.keys is not None:
            if option.named:
                lines.append(f"{pad}  Each named entry takes:")
            lines += ["", docs(option.keys, indent + 1), ""]  # a nested list, as reST has it
    return "\n".join(lines)
