"""Waiting in tests: poll a condition with a generous deadline, never sleep a fixed time and hope."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 60,
    *,
    interval: float = 0.05,
    what: str | Callable[[], str] = "",
) -> Any:
    """Poll `predicate` (plain or async) until it returns something truthy, and return that.

    On timeout, raise TimeoutError naming `what` (a callable is asked then, so the message shows
    the state at the deadline, not at the start)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout:g}s waiting for "
                               f"{described or getattr(predicate, '__qualname__', repr(predicate))}")
        await asyncio.sleep(interval)
