"""The compiled codec, for the tests that need it."""

from __future__ import annotations

import pytest

from pybroadway.term import _impl
from testkit.peers import IN_CI


def require_native() -> None:
    """Fail under CI, skip elsewhere, if the native codec is not built (``pip install -e .``
    builds it; scripts/test.sh does)."""
    if _impl.built is not None:
        return
    message = f"the native codec is not built: {_impl.reason} (pip install -e . builds it)"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
