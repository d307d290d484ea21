"""Work that grows with a request, done in slices so the reactor keeps answering (SPEC §9).

A loop over 100,000 refs or runs in one reactor turn holds health checks, progress streams,
other builds and the lease heartbeat for seconds. ``in_slices`` hands such a loop to a
``twisted.internet.task.Cooperator``: it runs items until its slice of time is used up (10 ms
with Twisted's default cooperator), then gives the reactor back until the next slice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Cooperator, cooperate

_T = TypeVar("_T")

STEP = 64
"""Items handled between two looks at the clock: a step stays well under a millisecond."""


Pace = Callable[[], "Deferred[None] | None"]
"""Asked between steps: a Deferred to wait for before the next (the event log catching up),
or None to go on."""


def in_slices(
    items: Iterable[_T],
    work: Callable[[_T], object],
    cooperator: Cooperator | None = None,
    pace: Pace | None = None,
    step: int = STEP,
) -> Deferred[None]:
    """Call ``work(item)`` for each of ``items`` in order, a slice of time at a time.

    Fires once all are done, or errbacks with what ``work`` raised (the rest are left). A short
    sequence (one step) is done at once; an iterator always goes through the cooperator. With
    ``pace``, each step waits for what it returns. ``step`` items go between two looks at the
    clock: 1 where one item may hold much work (a kept run's hundreds of refs).
    """
    if isinstance(items, Sequence) and len(items) <= step:
        for item in items:
            work(item)
        return succeed(None)
    steps = _steps(items, work, pace, step)
    task = cooperate(steps) if cooperator is None else cooperator.cooperate(steps)
    return task.whenDone().addCallback(lambda _: None)


def collect_in_slices(
    items: Iterable[_T], cooperator: Cooperator | None = None
) -> Deferred[list[_T]]:
    """The items an iterator yields, taken a slice of time at a time (for a long generator)."""
    collected: list[_T] = []
    steps = _steps(items, collected.append)
    task = cooperate(steps) if cooperator is None else cooperator.cooperate(steps)
    return task.whenDone().addCallback(lambda _: collected)


def _steps(
    items: Iterable[_T], work: Callable[[_T], object], pace: Pace | None = None, step: int = STEP
) -> Iterator[Deferred[None] | None]:
    for count, item in enumerate(items, 1):
        work(item)
        if count % step == 0:
            yield None if pace is None else pace()
