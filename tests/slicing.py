"""Driving work in slices (``databuild.slices``) on a controlled clock, for the tests that
show a big loop gives the reactor back."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, Cooperator

TICK_S = 0.01


def one_step_per_slice(clock: Clock) -> Cooperator:
    """A cooperator whose every slice holds one step, scheduled on ``clock``."""
    return Cooperator(
        terminationPredicateFactory=lambda: lambda: True,
        scheduler=lambda work: clock.callLater(TICK_S, work),
    )


def slices_until(clock: Clock, done: Deferred[Any], what: str) -> int:
    """Advance ``clock`` a slice at a time until ``done`` fires; how many slices it took.
    Fails if nothing is scheduled while ``done`` waits: the work stalled."""
    slices = 0
    while not done.called:
        assert clock.getDelayedCalls(), f"{what} stalled"
        clock.advance(TICK_S)
        slices += 1
    return slices
