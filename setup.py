"""Builds the optional compiled accelerators: pybroadway.term's codec (pybroadway/term/_native)
and a worker's message builder (pybroadway/workers/_native).

Everything else is in pyproject.toml. Without a working C compiler the build of an
extension fails quietly (a warning) and the package installs anyway: its pure-Python
version, the reference implementation, runs then.
"""

from __future__ import annotations

import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that never fails the installation: a missing or broken compiler leaves the
    package without its accelerator."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all (DistutilsPlatformError, …)
            self._skipped(exc)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError, a compiler that is `false`…
            self._skipped(exc)

    @staticmethod
    def _skipped(exc: BaseException) -> None:
        print(f"WARNING: a pybroadway accelerator was not built ({exc}); "
              "its pure-Python version will be used", file=sys.stderr)


WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
            "-Wno-missing-field-initializers"]

setup(
    ext_modules=[
        Extension(
            "pybroadway.term._ccodec",
            sources=[f"pybroadway/term/_native/{name}.c"
                     for name in ("module", "decode", "encode")],
            depends=["pybroadway/term/_native/codec.h"],
            extra_compile_args=WARNINGS,
            optional=True,
        ),
        # A worker's events as Messages (pybroadway/workers/_worker.py runs without it).
        Extension("pybroadway.workers._cunwrap",
                  sources=["pybroadway/workers/_native/unwrap.c"],
                  extra_compile_args=WARNINGS, optional=True),
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
