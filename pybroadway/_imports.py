"""What the command line and the config file name by import path (``module:name``): a pipeline
class, a ``partition_by`` function. One loader serves ``serve``, ``--config`` and the workers."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from pybroadway.pipeline import Pipeline


def import_path(spec: str, kind: str) -> Any:
    """The object ``module:name`` names (``name`` may be dotted). The module is looked for in
    the current directory first, as ``python -m`` would, also when an installed command runs.
    Raises ValueError, in words, if ``spec`` is not ``module:name`` or does not import."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ValueError(f"expected an import path module:{kind}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
        for part in name.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import it ({exc})") from None
    return target


def load_pipeline(spec: str) -> type[Pipeline]:
    """The Pipeline subclass ``module:Class`` names; ValueError, in words, if it is not one."""
    cls = import_path(spec, "Class")
    if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
        raise ValueError("it is not a subclass of pybroadway.pipeline.Pipeline")
    return cls
