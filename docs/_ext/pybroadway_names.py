"""The public names of pybroadway, and what documents each: the site's reference
(pybroadway_docs) and tests/test_docs.py both read them here (this module needs no Sphinx)."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["MODULES", "attribute_doc", "canonical_names", "has_identity", "public_names"]

#: The documented modules, in order: a name exported by several is documented in the first.
MODULES = (
    "pybroadway",
    "pybroadway.errors",
    "pybroadway.pipeline",
    "pybroadway.pipeline.options",
    "pybroadway.pipeline.testing",
    "pybroadway.pipeline.telemetry",
    "pybroadway.erldist",
    "pybroadway.erldist.stages",
    "pybroadway.erldist.pg",
    "pybroadway.erldist.global_names",
    "pybroadway.erldist.epmd",
    "pybroadway.term",
    "pybroadway.otp_distribution",
    "pybroadway.gen_stage",
    "pybroadway.workers",
    "pybroadway.metrics",
    "pybroadway.dashboard",
)


def public_names() -> Iterator[tuple[str, str, Any]]:
    """``(module, name, object)`` for every name in the ``__all__`` of :data:`MODULES`."""
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            yield module_name, name, getattr(module, name)


def has_identity(value: Any) -> bool:
    """Classes, functions and modules are exported objects; other values (ints, strings)
    may be equal and identical by chance."""
    return inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value)


def canonical_names() -> dict[int, str]:
    """``id(object) -> "module.name"`` of the entry that documents each class and function."""
    found: dict[int, str] = {}
    for module_name, name, value in public_names():
        if has_identity(value):
            found.setdefault(id(value), f"{module_name}.{name}")
    return found


def _assigned_doc(source: str, name: str) -> str | None:
    """The ``#:`` comment above, or the string literal after, the assignment of ``name`` at
    the top level of ``source``."""
    lines = source.splitlines()
    tree = ast.parse(source)
    for index, statement in enumerate(tree.body):
        targets: list[ast.expr] = []
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        if not any(isinstance(target, ast.Name) and target.id == name for target in targets):
            continue
        comment = []
        line = statement.lineno - 2
        while line >= 0 and lines[line].lstrip().startswith("#:"):
            comment.insert(0, lines[line].lstrip()[2:].strip())
            line -= 1
        if comment:
            return " ".join(comment)
        following = tree.body[index + 1] if index + 1 < len(tree.body) else None
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) \
                and isinstance(following.value.value, str):
            return inspect.cleandoc(following.value.value)
    return None


def attribute_doc(module_name: str, name: str) -> str | None:
    """The documentation of the constant ``name`` exported by ``module_name``: its ``#:``
    comment (or following string) where it is assigned, in that module or the package module
    it is imported from."""
    value = getattr(sys.modules[module_name], name)
    package = module_name.split(".")[0]
    candidates = [module_name, *sorted(
        loaded for loaded, module in list(sys.modules.items())
        if loaded.startswith(package + ".") and getattr(module, name, None) is value)]
    for candidate in candidates:
        module = sys.modules[candidate]
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py"):
            doc = _assigned_doc(Path(path).read_text(), name)
            if doc:
                return doc
    return None
