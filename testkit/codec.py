"""The compiled accelerators, for the tests that need them."""

from __future__ import annotations

import pytest

from pybroadway.term import _impl
from testkit.peers import IN_CI


def require_native() -> None:
    """Fail under CI, skip elsewhere, if the native codec is not built (``pip install -e .``
    builds it; scripts/test.sh does)."""
    if _impl.built is None:
        _missing(f"the native codec is not built: {_impl.reason}")


def require_built(accelerator: object, name: str) -> None:
    """The same for another compiled module, ``accelerator`` (None: it did not import)."""
    if accelerator is None:
        _missing(f"{name} is not built")


def _missing(what: str) -> None:
    message = f"{what} (pip install -e . builds it)"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
