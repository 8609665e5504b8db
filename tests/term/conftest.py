"""Every codec test runs against both implementations: the pure-Python reference and the
compiled accelerator. Under CI a missing accelerator fails its half; elsewhere it is skipped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pybroadway import term
from testkit.codec import require_native


@pytest.fixture(scope="module", params=["python", "native"], autouse=True)
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the module's tests once with each codec (``pybroadway.term.IMPLEMENTATION``)."""
    name: str = request.param
    if name == "native":
        require_native()
    previous = term.IMPLEMENTATION
    term.use_implementation(name)
    yield name
    term.use_implementation(previous)
