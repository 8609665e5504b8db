"""The site's generated parts, so they cannot drift from the code:

- ``.. pybroadway-module:: NAME`` documents every name in ``NAME.__all__``: with autodoc where
  the object is first exported (in ``pybroadway_names.MODULES`` order), as a pointer to that
  entry where it is exported again (so each name is in the index, and documented once);
- ``.. pybroadway-options:: SCHEMA`` renders an options schema
  (:class:`pybroadway.pipeline.options.Option` values) as tables;
- ``.. pybroadway-cli::`` renders the ``pybroadway`` command's argument parser.

A type named by its defining (private) module, ``pybroadway.pipeline._message.Message``,
resolves to the public entry of the same object. A constant's documentation is its ``#:``
comment where it is assigned (``pybroadway_names.attribute_doc``, which tests/test_docs.py
checks every public name with).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from pybroadway_names import attribute_doc, canonical_names, has_identity
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def _entry(module_name: str, name: str, value: Any, canonical: dict[int, str]) -> list[str]:
    """The reST of one public name."""
    full = f"{module_name}.{name}"
    if inspect.ismodule(value):
        # the module's own entry is the indexed one
        return [f".. py:data:: {name}", "   :no-index:", "",
                f"   The module :py:mod:`{value.__name__}`.", ""]
    first = canonical.get(id(value)) if has_identity(value) else full
    if first != full:
        if inspect.isclass(value):
            kind = "exception" if issubclass(value, BaseException) else "class"
            head = f".. py:{kind}:: {name}"
        else:
            head = f".. py:function:: {name}{_signature(value)}"
        return [head, "", f"   The same as :py:obj:`{first}`.", ""]
    if inspect.isclass(value):
        kind = "autoexception" if issubclass(value, BaseException) else "autoclass"
        return [f".. {kind}:: {full}", "   :members:", "   :show-inheritance:", ""]
    if inspect.isroutine(value):
        return [f".. autofunction:: {full}", ""]
    shown = [] if isinstance(value, str | int | float | type(None)) else ["   :no-value:"]
    return [f".. autodata:: {full}", *shown, ""]


def _signature(value: Any) -> str:
    try:
        return str(inspect.signature(value)).replace("'", "")
    except (TypeError, ValueError):
        return "(...)"


class ModuleDirective(SphinxDirective):
    """Every name of a module's ``__all__``, after the module's docstring."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        canonical = canonical_names()
        lines = [f".. automodule:: {module_name}", ""]
        for name in module.__all__:
            lines += _entry(module_name, name, getattr(module, name), canonical)
        return self.parse_text(lines)

    def parse_text(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.section()
        container.document = self.state.document
        self.state.nested_parse(StringList(lines, self.get_source_info()[0]), 0, container)
        return list(container.children)


def _option_note(option: Any, code_default: Any = None) -> str:
    if code_default is not None and option.default is None and option.default_doc is None:
        return f"``{code_default!r}``"
    if option.required:
        note = "required"
    elif option.default_doc is not None:
        note = option.default_doc
    elif option.keys is not None and option.default is None:
        note = ""
    else:
        note = f"``{option.default!r}``"
    return note


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def option_tables(schema: dict[str, Any], title: str,
                  defaults: dict[str, Any] | None = None) -> list[str]:
    """A table of ``schema``'s options, then one table per nested schema. ``defaults`` are
    the defaults of options that the schema leaves to the code (keyword arguments')."""
    lines = [f".. list-table:: {title}", "   :header-rows: 1", "   :widths: 20 15 20 45", "",
             "   * - option", "     - type", "     - default", "     - what it does"]
    nested = []
    for key, option in schema.items():
        allowed = ""
        if option.choices is not None:
            allowed = " One of " + ", ".join(f"``{choice!r}``" for choice in option.choices) + "."
        if option.maximum is not None:
            allowed += f" At most {option.maximum:,}."
        lines += [f"   * - ``{key}``", f"     - {option.type}",
                  f"     - {_option_note(option, (defaults or {}).get(key)) or '—'}",
                  f"     - {_escape(option.doc)}{allowed}"]
        if option.keys is not None:
            inner = f"{title}: {key}" if ": " not in title else f"{title}.{key}"
            inner += ".NAME" if option.named else ""
            nested.append((option.keys, inner))
    lines.append("")
    for keys, inner in nested:
        lines += option_tables(keys, inner)
    return lines


def _imported(spec: str) -> Any:
    module_name, attribute = spec.split(":")
    return getattr(importlib.import_module(module_name), attribute)


def keyword_defaults(function: Any) -> dict[str, Any]:
    """The defaults of ``function``'s keyword arguments (a class: its ``__init__``'s), log
    levels by name."""
    found = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.default is not inspect.Parameter.empty and parameter.default is not None:
            found[name] = (logging.getLevelName(parameter.default)
                           if name.endswith("log_level") else parameter.default)
    return found


class OptionsDirective(ModuleDirective):
    """``.. pybroadway-options:: module:NAME [title]``: the schema ``NAME`` as tables;
    ``:defaults: module:Callable`` takes the defaults the schema leaves to the code from that
    callable's keyword arguments."""

    optional_arguments = 10
    final_argument_whitespace = True
    option_spec = {"defaults": str}

    def run(self) -> list[nodes.Node]:
        schema = _imported(self.arguments[0])
        title = " ".join(self.arguments[1:]) or self.arguments[0].split(":")[1]
        defaults = (keyword_defaults(_imported(self.options["defaults"]))
                    if "defaults" in self.options else None)
        return self.parse_text(option_tables(schema, title, defaults))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_reference(parser: argparse.ArgumentParser) -> list[str]:
    """One section per command: its usage, then its help as argparse prints it."""
    lines: list[str] = []
    for name, command in [("pybroadway", parser), *_subparsers(parser).items()]:
        title = name if command is parser else f"pybroadway {name}"
        lines += [f".. rubric:: {title}", f"   :name: {title.replace(' ', '-')}", "",
                  ".. code-block:: text", ""]
        lines += ["   " + line for line in _help(command).splitlines()]
        lines.append("")
    return lines


def _help(parser: argparse.ArgumentParser) -> str:
    # argparse wraps to $COLUMNS: a fixed width makes the page the same on every machine
    formatter = parser.formatter_class
    parser.formatter_class = lambda prog: formatter(prog, width=96)  # type: ignore[misc]
    try:
        return parser.format_help()
    finally:
        parser.formatter_class = formatter


class CliDirective(ModuleDirective):
    """``.. pybroadway-cli::``: the help of the command and of each of its subcommands."""

    required_arguments = 0

    def run(self) -> list[nodes.Node]:
        from pybroadway.cli import build_parser

        return self.parse_text(cli_reference(build_parser()))


def _data_doc(app: Sphinx, what: str, name: str, obj: Any, options: Any,
              lines: list[str]) -> None:
    """A constant's documentation is its ``#:`` comment where it is assigned (autodoc looks
    only in the module that exports it), never its type's docstring."""
    if what not in ("data", "attribute") or "." not in name:
        return
    module_name, attribute = name.rsplit(".", 1)
    if module_name not in sys.modules or not hasattr(sys.modules[module_name], "__all__"):
        return
    if attribute not in sys.modules[module_name].__all__:
        return
    doc = attribute_doc(module_name, attribute)
    if doc is None and has_identity(obj):
        return
    lines[:] = [*(doc or "").splitlines(), ""]


def _resolve_private(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    """``pybroadway.x._y.Name`` (how annotations name a type) → its public entry."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("pybroadway."):
        return None
    value = _find(target)
    if value is None:
        return None  # no such object: a warning, so an error with -W
    public = canonical_names().get(id(value))
    if public is None:
        return contnode  # a real object the reference leaves out: its name, unlinked
    if public == target:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", public, node, contnode)


def _find(target: str) -> Any:
    """The module or object ``target`` names (``a.b.C.method``), or None."""
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        value: Any = module
        for part in parts[split:]:
            value = getattr(value, part, None)
            if value is None:
                return None
        return value
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("pybroadway-module", ModuleDirective)
    app.add_directive("pybroadway-options", OptionsDirective)
    app.add_directive("pybroadway-cli", CliDirective)
    app.connect("autodoc-process-docstring", _data_doc)
    app.connect("missing-reference", _resolve_private)
    return {"parallel_read_safe": True, "version": "1"}


__all__ = ["cli_reference", "keyword_defaults", "option_tables", "setup"]
