"""The README's and the guides' text, as the tests that run their blocks read it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ROOT / "docs" / "guides"


def page(name: str) -> str:
    """``"README"``, or the guide ``name`` (``docs/guides/NAME.md``)."""
    path = ROOT / "README.md" if name == "README" else GUIDES / f"{name}.md"
    return path.read_text()


def pages() -> dict[str, str]:
    """The README and every guide, by name."""
    return {"README": page("README")} | {path.stem: path.read_text()
                                         for path in sorted(GUIDES.glob("*.md"))}


def section(text: str, heading: str) -> str:
    """The ``## heading`` section of ``text``, up to the next ``##``."""
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    """The fenced blocks of ``language`` in ``text``, in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)
