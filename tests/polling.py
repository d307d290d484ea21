"""Waiting in tests: poll a condition until it holds, with a deadline; never a fixed sleep.

``poll_until`` blocks, for tests that drive processes from outside a reactor;
``poll_until_async`` waits on the reactor, for tests that run inside one (its condition may
return an awaitable). Both return the condition's first true value and fail the test naming
``what`` once ``timeout_s`` has passed.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.task import deferLater

T = TypeVar("T")

DEADLINE_S = 30.0
"""How long a condition may take to hold; generous, for a loaded machine."""
INTERVAL_S = 0.02


def _expired(started: float, timeout_s: float, what: str) -> None:
    if time.monotonic() - started > timeout_s:
        raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")


def poll_until(
    condition: Callable[[], T],
    what: str,
    timeout_s: float = DEADLINE_S,
    interval_s: float = INTERVAL_S,
) -> T:
    """Call ``condition`` until it returns something true, and return that (blocking)."""
    started = time.monotonic()
    while not (value := condition()):
        _expired(started, timeout_s, what)
        time.sleep(interval_s)
    return value


async def poll_until_async(
    condition: Callable[[], Any],
    what: str,
    timeout_s: float = DEADLINE_S,
    interval_s: float = INTERVAL_S,
) -> Any:
    """``poll_until`` on the reactor: waits between calls without blocking it."""
    started = time.monotonic()
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        _expired(started, timeout_s, what)
        await deferLater(reactor, interval_s, lambda: None)
