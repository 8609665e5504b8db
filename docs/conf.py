"""Sphinx configuration of pybroadway's site (bash scripts/docs.sh builds it)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]  # this clone's pybroadway, the extension

project = "pybroadway"
author = "the pybroadway authors"
copyright = "the pybroadway authors"
from pybroadway import __version__ as release  # noqa: E402

version = release

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",
    "pybroadway_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext", "protocol.md"]  # protocol.md: a pointer to guides/protocol.md
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "furo"
html_title = f"pybroadway {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False

nitpicky = True
# No network at build time (so no intersphinx): what the standard library and typing name
# cannot be linked; every pybroadway name must be.
nitpick_ignore_regex = [
    (r"py:.*", r"(?!pybroadway\b).*"),
]
