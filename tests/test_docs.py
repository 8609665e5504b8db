"""The documentation site (docs/, built by scripts/docs.sh): every public name has a docstring
and an entry in the reference, and every link of the built site resolves (no network: the
pages and anchors are checked in docs/_build/html)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

from pybroadway_names import attribute_doc, public_names  # noqa: E402


def docstring(module: str, name: str, value: object) -> str | None:
    """What documents a public name: a class's own docstring (not its base's), a function's or
    module's, or a constant's ``#:`` comment where it is assigned."""
    if inspect.isclass(value):
        return value.__dict__.get("__doc__")
    if inspect.isroutine(value) or inspect.ismodule(value):
        return value.__doc__
    return attribute_doc(module, name)


def test_every_public_name_has_a_docstring() -> None:
    missing = [f"{module}.{name}" for module, name, value in public_names()
               if not (docstring(module, name, value) or "").strip()]
    assert missing == []


class _Page(HTMLParser):
    """The ids and the links (href, src) of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)
            elif key in ("href", "src") and value:
                self.links.append(value)


@pytest.fixture(scope="module")
def site() -> dict[Path, _Page]:
    """The site, built now as scripts/docs.sh builds it (incrementally: seconds when
    scripts/test.sh has just built it), each page parsed."""
    try:
        import sphinx  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("Sphinx is not installed (pip install -e '.[docs]')")
    built = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
         str(ROOT / "docs"), str(SITE)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    pages = {}
    for path in SITE.rglob("*.html"):
        page = _Page()
        page.feed(path.read_text())
        pages[path] = page
    return pages


def test_every_public_name_is_in_the_general_index(site: dict[Path, _Page]) -> None:
    """Each name's entry (a module's own, for a module exported by its package) is linked
    from the general index."""
    indexed = {urlsplit(link).fragment for link in site[SITE / "genindex.html"].links
               if link.startswith("reference/")}
    missing = [f"{module}.{name}" for module, name, value in public_names()
               if (f"module-{value.__name__}" if inspect.ismodule(value)
                   else f"{module}.{name}") not in indexed]
    assert missing == []


def test_every_link_of_the_site_resolves(site: dict[Path, _Page]) -> None:
    broken = []
    for path, page in site.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("mailto:"):
                continue  # outside the site: not checked (no network)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(SITE)}: {link}")
            elif parts.fragment and target.suffix == ".html" and \
                    parts.fragment not in site[target].ids:
                broken.append(f"{path.relative_to(SITE)}: {link} (no such anchor)")
    assert broken == []
