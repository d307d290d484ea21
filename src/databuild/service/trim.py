"""Giving freed memory back to the system after a burst (glibc keeps it otherwise).

Frames of dropped stream readers are freed in thousands of pieces in the middle of the heap;
glibc's ``free`` gives back only the heap's top, so RSS stays at its peak until
``malloc_trim`` returns the free pages inside it. One trim, on the reactor, a moment after
the last release of a burst; a no-op where the C library has no ``malloc_trim``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

TRIM_DELAY_S = 0.5


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class Trimmer:
    """Calls ``malloc_trim(0)`` ``TRIM_DELAY_S`` after :meth:`soon`, once for every call
    made meanwhile (a burst of releases costs one trim)."""

    def __init__(self, clock: IReactorTime, delay_s: float = TRIM_DELAY_S) -> None:
        self._clock = clock
        self._delay_s = delay_s
        self._call: IDelayedCall | None = None
        self._trim = _malloc_trim()
        self.trims = 0

    def soon(self) -> None:
        if self._trim is None:
            return
        if self._call is None:
            self._call = self._clock.callLater(self._delay_s, self._now)

    def _now(self) -> None:
        self._call = None
        self.trims += 1
        if self._trim is not None:
            self._trim(0)
