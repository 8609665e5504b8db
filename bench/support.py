"""What the benchmarks that start BEAM nodes share: compiling their Erlang helpers, the nodes'
flags, progress lines and the result table."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a clone without installing
    sys.path.insert(0, str(ROOT))

# No scheduler busy-waiting: on a small machine spinning schedulers of one node steal the CPU
# the other node (or the Python node) needs, which would understate the BEAM baseline.
BEAM_FLAGS = ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"]


def compile_erlang(module: str, source: str) -> str:
    """Compile ``source`` (the Erlang module ``module``) with erlc; return the .beam's folder."""
    build = tempfile.mkdtemp(prefix=f"{module}-")
    path = Path(build, f"{module}.erl")
    path.write_text(source)
    subprocess.run(["erlc", "-o", build, str(path)], check=True)
    return build


def say(text: str) -> None:
    """A progress line, on stderr so that stdout holds only the table."""
    print(text, file=sys.stderr, flush=True)


def print_table(title: str, rows: Sequence[Sequence[str]]) -> None:
    """The result: a title line, then the rows in aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"\n{title}")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
