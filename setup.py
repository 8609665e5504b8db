"""Builds the optional compiled accelerator of pybroadway.term (pybroadway/term/_native).

Everything else is in pyproject.toml. Without a working C compiler the build of the
extension fails quietly (a warning) and the package installs anyway: pybroadway.term then
runs its pure-Python codec, which is the reference implementation.
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
        print(f"WARNING: pybroadway's native codec was not built ({exc}); "
              "the pure-Python codec will be used", file=sys.stderr)


setup(
    ext_modules=[Extension(
        "pybroadway.term._ccodec",
        sources=[f"pybroadway/term/_native/{name}.c" for name in ("module", "decode", "encode")],
        depends=["pybroadway/term/_native/codec.h"],
        extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                            "-Wno-missing-field-initializers"],
        optional=True,
    )],
    cmdclass={"build_ext": OptionalBuildExt},
)
