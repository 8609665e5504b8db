"""The package's shape holds: layers import only what is below them, no module imports
another in a cycle at run time, no two modules import each other even for types only, and no
module outgrows one job (~450 lines)."""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pybroadway"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def runtime_imports(name: str, *, with_types: bool = False) -> set[str]:
    """The package modules ``name`` imports when it is loaded (``with_types``: and those it
    imports under ``if TYPE_CHECKING:``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    statements: list[ast.stmt] = []
    for node in ast.parse(path.read_text()).body:
        is_type_block = isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        statements.extend(node.body if is_type_block and with_types else [node])
    for node in statements:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            submodules = {f"{source}.{alias.name}" for alias in node.names} & MODULES.keys()
            found |= submodules if len(submodules) == len(node.names) else {source, *submodules}
    return (found & MODULES.keys()) - {name}


def test_no_import_cycle_at_run_time() -> None:
    graph = {name: runtime_imports(name) for name in MODULES}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_no_two_modules_import_each_other() -> None:
    # Not even for types only: the lower module declares what it needs of the upper one as a
    # Protocol (ProcessHost, ProducerHost, ...) and the upper one alone imports downwards.
    graph = {name: runtime_imports(name, with_types=True) for name in MODULES}
    mutual = {(a, b) for a in graph for b in graph[a] if a < b and a in graph[b]}
    assert mutual == set(), "modules that import each other"


def test_no_stage_reaches_back_into_the_topology() -> None:
    # Stages are given their inputs (Broadway's topology/* modules); only the Pipeline builds.
    topology = "pybroadway.pipeline._topology"
    importers = sorted(name for name in MODULES if name.startswith("pybroadway.pipeline.")
                       and topology in runtime_imports(name, with_types=True))
    assert importers == ["pybroadway.pipeline._pipeline"]


def test_the_pipeline_names_nothing_of_the_workers() -> None:
    # Workers plug in as an offload, from outside: the pipeline neither imports nor names them.
    named = re.compile(r"pybroadway\.workers|WorkerFront|register_offload")
    offenders = sorted(name for name, path in MODULES.items()
                       if name.startswith("pybroadway.pipeline") and named.search(path.read_text()))
    assert offenders == [], "pipeline modules that name the workers"


def test_only_the_node_calls_its_private_methods() -> None:
    # Its parts and its processes go through what it shows (node.signals, node.new_pid, ...).
    calls = re.compile(r"\bnode\._[a-z]")
    offenders = sorted(name for name, path in MODULES.items()
                       if name != "pybroadway.erldist.node" and calls.search(path.read_text()))
    assert offenders == [], "modules that call a private method of Node"


@pytest.mark.parametrize(("lower", "upper"), [
    ("pybroadway.term", "pybroadway.erldist"),
    ("pybroadway.term", "pybroadway.pipeline"),
    ("pybroadway.erldist", "pybroadway.pipeline"),
    ("pybroadway.pipeline", "pybroadway.erldist"),
    ("pybroadway.erldist", "pybroadway.otp_distribution"),
    ("pybroadway.pipeline", "pybroadway.otp_distribution"),
    ("pybroadway.erldist", "pybroadway.gen_stage"),
    ("pybroadway.pipeline", "pybroadway.gen_stage"),
    ("pybroadway.gen_stage", "pybroadway.otp_distribution"),
    ("pybroadway.otp_distribution", "pybroadway.gen_stage"),
    ("pybroadway.gen_stage", "pybroadway.cli"),
    # workers joins pipeline, erldist and gen_stage; nothing below imports it
    ("pybroadway.term", "pybroadway.workers"),
    ("pybroadway.erldist", "pybroadway.workers"),
    ("pybroadway.pipeline", "pybroadway.workers"),
    ("pybroadway.gen_stage", "pybroadway.workers"),
    ("pybroadway.otp_distribution", "pybroadway.workers"),
    ("pybroadway.workers", "pybroadway.otp_distribution"),
    ("pybroadway.workers", "pybroadway.cli"),
    ("pybroadway.workers", "pybroadway.metrics"),
    # metrics sits above the connector and needs prometheus_client: only cli loads it, lazily
    ("pybroadway.term", "pybroadway.metrics"),
    ("pybroadway.erldist", "pybroadway.metrics"),
    ("pybroadway.pipeline", "pybroadway.metrics"),
    ("pybroadway.otp_distribution", "pybroadway.metrics"),
    ("pybroadway.cli", "pybroadway.metrics"),
    # the dashboard sits above everything and needs aiohttp: started lazily, from cli's flags
    ("pybroadway.term", "pybroadway.dashboard"),
    ("pybroadway.erldist", "pybroadway.dashboard"),
    ("pybroadway.pipeline", "pybroadway.dashboard"),
    ("pybroadway.otp_distribution", "pybroadway.dashboard"),
    ("pybroadway.gen_stage", "pybroadway.dashboard"),
    ("pybroadway.workers", "pybroadway.dashboard"),
    ("pybroadway.metrics", "pybroadway.dashboard"),
    ("pybroadway.cli", "pybroadway.dashboard"),
    ("pybroadway._arguments", "pybroadway.dashboard"),
])
def test_layers_import_only_what_is_below_them(lower: str, upper: str) -> None:
    offenders = sorted(name for name in MODULES if name.startswith(lower)
                       for imported in runtime_imports(name) if imported.startswith(upper))
    assert offenders == [], f"{lower} must not import {upper}"


def test_no_module_outgrows_one_job() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
