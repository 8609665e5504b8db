"""asyncio helpers shared by every layer."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def maybe_await(value: T | Awaitable[T]) -> T:
    """The value a callback returned, awaited first if it is awaitable.

    User callbacks may be plain functions or coroutines; callers invoke them and pass the
    result here, so both kinds are served by one code path.
    """
    if inspect.isawaitable(value):
        return await value
    return value
