"""The topology a front hands its workers: what its pipeline runs, as a term.

A worker imports the pipeline class by module path, but the options the front was *given* —
keyword arguments, ``serve --config`` tables — live only in the front. So a worker asks the
front's stage for them when it joins (``{'$gen_call', From, {pybroadway_worker_options,
Name}}``, answered ``{ok, Map}``) and builds its pipeline from them; keyword arguments win over
class attributes there as on the front.

What crosses: the processors' and batchers' options (numbers, strings, atoms; an ``executor``
only as ``"thread"``), ``shutdown``, every ``partition_by`` as the import path
``module:qualname`` of the function (a function a worker cannot import is refused when the
front starts: :func:`check_partition_by`), and ``context`` when it is made of values a term
carries back unchanged (None, booleans, numbers, str, bytes, atoms, pids, references, tuples,
lists, dicts of them). Other contexts are not sent: the front says so in one log line, the
worker too, and the worker's callbacks get the class attribute ``context`` instead.

``str`` travels as a binary and comes back as ``str``; ``bytes`` travel as
``{pybroadway_bytes, Binary}`` (the one Python distinction a term does not keep).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pybroadway._imports import import_path
from pybroadway.errors import ArgumentError
from pybroadway.term import Atom, EncodeError, Pid, Reference, decode, encode

log = logging.getLogger("pybroadway.workers")

OPTIONS_REQUEST = Atom("pybroadway_worker_options")
"""``{pybroadway_worker_options, PipelineName}``: the call a worker makes to the front's stage."""
OK = Atom("ok")
BYTES = Atom("pybroadway_bytes")

_SCALARS = (type(None), bool, int, float, Atom, Pid, Reference)


class Unsendable(ArgumentError):
    """A value that does not cross to a worker unchanged."""


def pack(value: Any) -> Any:
    """``value`` as a term that :func:`unpack` turns back into an equal value; raises
    :class:`Unsendable` naming what does not cross."""
    kind = type(value)
    if kind in _SCALARS or kind is str:
        return value
    if kind is bytes:
        return (BYTES, value)
    if kind is tuple:
        if len(value) == 2 and value[0] is BYTES:
            raise Unsendable(f"a tuple starting with the atom {BYTES} is reserved")
        return tuple(pack(item) for item in value)
    if kind is list:
        return [pack(item) for item in value]
    if kind is dict:
        return {pack(key): pack(item) for key, item in value.items()}
    raise Unsendable(f"{kind.__name__} values do not cross to workers")


def unpack(term: Any) -> Any:
    """What :func:`pack` packed (binaries become ``str``)."""
    kind = type(term)
    if kind is bytes:
        return term.decode()
    if kind is tuple:
        if len(term) == 2 and term[0] is BYTES and type(term[1]) is bytes:
            return term[1]
        return tuple(unpack(item) for item in term)
    if kind is list:
        return [unpack(item) for item in term]
    if kind is dict:
        return {unpack(key): unpack(item) for key, item in term.items()}
    return term


def sendable(value: Any) -> tuple[Any, str | None]:
    """``(packed value, None)`` if ``value`` crosses to a worker unchanged, else
    ``(None, why not)``: packed, encoded, decoded and unpacked, it must equal itself."""
    try:
        packed = pack(value)
        back = unpack(decode(encode(packed)))
    except (Unsendable, EncodeError, UnicodeDecodeError, RecursionError) as exc:
        return None, str(exc) or type(exc).__name__
    if back != value:
        return None, "it does not come back equal from the term format"
    return packed, None


def function_path(function: Callable[..., Any]) -> str:
    """The import path ``module:qualname`` a worker imports ``function`` by; ValueError, in
    words, when a worker could not (``__main__``, a lambda, a function inside a function)."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    name = qualname or getattr(function, "__name__", repr(function))
    if not module or not qualname or module == "__main__" or "<" in qualname:
        raise ArgumentError(
            f"workers import partition_by by module path, and {name} (in {module}) cannot be "
            f"imported so: define it at the top level of a module of its own (not __main__, "
            f"not a lambda, not inside a function)")
    spec = f"{module}:{qualname}"
    try:
        found = import_path(spec, "function")
    except ValueError as exc:
        raise ArgumentError(f"workers import partition_by by module path, and {spec} does not "
                            f"import: {exc}") from None
    if found is not function:
        raise ArgumentError(f"workers import partition_by by module path, and {spec} names "
                            f"another object than the front's partition_by")
    return spec


def _stage(options: dict[str, Any], where: str, notes: list[str]) -> dict[str, Any]:
    """One stage's options (processors' default or a batcher's) for the wire."""
    stage: dict[str, Any] = {}
    for key, value in options.items():
        if key == "partition_by":
            stage[key] = None if value is None else function_path(value)
        elif key == "executor":
            if value is None or value == "thread":
                stage[key] = value
            else:
                notes.append(f"{where}.executor {value!r} stays on the front (an Executor "
                             f"object does not cross): the workers use their class's")
        else:
            stage[key] = value
    return stage


def front_topology(options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What the front hands its workers, from the front pipeline's validated ``options``:
    ``(map to send, notes)``; the notes say what does not cross (one log line each).
    Raises ValueError when a ``partition_by`` cannot be imported by a worker."""
    notes: list[str] = []
    topology: dict[str, Any] = {
        "processors": {"default": _stage(options["processors"]["default"],
                                         "processors.default", notes)},
        "batchers": {name: _stage(batcher, f"batchers.{name}", notes)
                     for name, batcher in options["batchers"].items()},
        "partition_by": (None if options["partition_by"] is None
                         else function_path(options["partition_by"])),
        "shutdown": options["shutdown"],
    }
    packed, why = sendable(topology)
    if why is not None:  # batcher names or options of a kind that does not cross
        raise ArgumentError(f"the workers cannot be given this pipeline's processors and "
                            f"batchers: {why}")
    context, why = sendable(options["context"])
    if why is None:
        packed["context"] = (OK, context)
    else:
        packed["context"] = (Atom("unsendable"), why)
        notes.append(f"context {type(options['context']).__name__} does not cross to the "
                     f"workers ({why}): their callbacks get the class attribute context")
    return packed, notes


def worker_options(term: Any, cls: type[Any]) -> dict[str, Any]:
    """The keyword arguments a worker builds ``cls`` with, from the front's topology map (a
    ``{ok, Map}`` reply); the class attribute stands in for what did not cross."""
    if not (type(term) is tuple and len(term) == 2 and term[0] is OK
            and type(term[1]) is dict):
        raise ArgumentError(f"the front answered the options call with {term!r}")
    topology = unpack(term[1])
    context = topology.get("context")
    options: dict[str, Any] = {}
    processors = topology["processors"]
    batchers = topology["batchers"]
    class_processors = (cls.processors or {}).get("default", {})
    _resolve_stage(processors["default"], class_processors)
    for name, batcher in batchers.items():
        _resolve_stage(batcher, (cls.batchers or {}).get(name, {}))
    options["processors"] = processors
    options["batchers"] = batchers
    options["shutdown"] = topology["shutdown"]
    options["partition_by"] = (None if topology["partition_by"] is None
                               else _function(topology["partition_by"]))
    if type(context) is tuple and len(context) == 2 and context[0] is OK:
        options["context"] = context[1]
    else:
        why = context[1] if type(context) is tuple and len(context) == 2 else "not sent"
        log.warning("the front's context did not cross (%s): the callbacks get %s.context",
                    why, cls.__qualname__)
    return options


def _resolve_stage(stage: dict[str, Any], class_stage: dict[str, Any]) -> None:
    if stage.get("partition_by") is not None:
        stage["partition_by"] = _function(stage["partition_by"])
    if "executor" not in stage and class_stage.get("executor") is not None:
        stage["executor"] = class_stage["executor"]


def _function(spec: str) -> Callable[..., Any]:
    try:
        function = import_path(spec, "function")
    except ValueError as exc:
        raise ArgumentError(f"partition_by {spec}: {exc}") from None
    if not callable(function):
        raise ArgumentError(f"partition_by {spec} is not a function")
    return function  # type: ignore[no-any-return]
