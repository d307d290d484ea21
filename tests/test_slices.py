"""Work in slices (``databuild.slices``): paced by what it produces, on a controlled clock."""

from __future__ import annotations

from tests.slicing import one_step_per_slice
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from databuild.slices import STEP, in_slices


def test_work_waits_between_steps_while_its_pace_says_so() -> None:
    """A step that left too much behind (the event log's queue, say) holds the next one
    back until its pace fires; nothing is skipped or repeated."""
    clock = Clock()
    done: list[int] = []
    held: list[Deferred[None]] = []

    def pace() -> Deferred[None] | None:
        if len(done) == 2 * STEP and not held:
            held.append(Deferred())
            return held[0]
        return None

    finished = in_slices(range(4 * STEP), done.append, one_step_per_slice(clock), pace=pace)
    for _ in range(10):
        clock.advance(0.01)
    assert len(done) == 2 * STEP and not finished.called  # held at the pace
    held[0].callback(None)
    while not finished.called:
        clock.advance(0.01)
    assert done == list(range(4 * STEP))


def test_a_short_sequence_is_done_at_once_without_pacing() -> None:
    done: list[int] = []
    finished = in_slices(list(range(STEP)), done.append, pace=lambda: Deferred())
    assert finished.called and done == list(range(STEP))


def test_a_step_of_one_gives_the_reactor_back_after_each_item() -> None:
    clock = Clock()
    done: list[int] = []
    finished = in_slices(list(range(3)), done.append, one_step_per_slice(clock), step=1)
    seen = []
    while not finished.called:
        clock.advance(0.01)
        seen.append(len(done))
    assert seen[:3] == [1, 2, 3] and done == [0, 1, 2]
