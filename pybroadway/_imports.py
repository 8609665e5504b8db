"""What the command line and the config file name by import path (``module:name``): a pipeline
class, a ``partition_by`` function. One loader serves ``serve``, ``--config`` and the workers.

Modules are looked for in the current directory first, as ``python -m`` would, then beside the
configuration file (:func:`look_beside`), then on ``sys.path``."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from pybroadway.pipeline import Pipeline

_beside: list[str] = []  # the folders of the configuration files read, as look_beside made them


def look_beside(file: str | os.PathLike[str]) -> None:
    """Find modules in the folder of ``file`` (a ``--config`` file) too, after the current
    directory. The workers a server starts inherit it (they are given its ``sys.path``)."""
    folder = str(Path(file).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(1 if sys.path and sys.path[0] in ("", os.getcwd()) else 0, folder)
    if folder not in _beside:
        _beside.append(folder)


def _where_looked() -> str:
    places = [f"the current directory ({os.getcwd()})"]
    places += [f"beside the configuration file ({folder})" for folder in _beside]
    return f"modules are looked for in {', '.join(places)} and on PYTHONPATH"


def import_path(spec: str, kind: str) -> Any:
    """The object ``module:name`` names (``name`` may be dotted). The module is looked for in
    the current directory first, as ``python -m`` would, also when an installed command runs.
    Raises ValueError, in words, if ``spec`` is not ``module:name`` or does not import (a
    syntax error in the module is its file, line and message)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ValueError(f"expected an import path module:{kind}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
        for part in name.split("."):
            target = getattr(target, part)
    except SyntaxError as exc:  # the user's module: where, and what, in one line
        raise ValueError(f"cannot import it: {exc.filename}, line {exc.lineno}: "
                         f"{exc.msg}") from None
    except ModuleNotFoundError as exc:
        # Only the module named is looked for here; a module it imports is its own matter.
        missing = exc.name is not None and f"{module_name}.".startswith(f"{exc.name}.")
        raise ValueError(f"cannot import it ({exc}" + (f"; {_where_looked()})" if missing
                                                       else ")")) from None
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import it ({exc})") from None
    return target


def load_pipeline(spec: str) -> type[Pipeline]:
    """The Pipeline subclass ``module:Class`` names; ValueError, in words, if it is not one."""
    cls = import_path(spec, "Class")
    if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
        raise ValueError("it is not a subclass of pybroadway.pipeline.Pipeline")
    return cls
