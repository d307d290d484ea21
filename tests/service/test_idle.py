"""The idle timer, driven by a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from databuild.service.idle import IdleTimer


def started(timeout_s: float) -> tuple[Clock, IdleTimer, list[float]]:
    clock = Clock()
    fired: list[float] = []
    timer = IdleTimer(clock, timeout_s, lambda: fired.append(clock.seconds()))
    timer.startService()
    return clock, timer, fired


def test_fires_once_after_timeout_of_idleness() -> None:
    clock, _, fired = started(10)
    clock.advance(9.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == [10]
    clock.advance(100)
    assert fired == [10]


def test_never_fires_while_held() -> None:
    clock, timer, fired = started(10)
    release = timer.hold()
    clock.advance(1000)
    assert fired == []
    assert timer.busy and not timer.armed
    release()
    assert timer.armed


def test_release_restarts_the_full_timeout() -> None:
    clock, timer, fired = started(10)
    clock.advance(8)
    timer.hold()()  # a short request resets the timer
    clock.advance(8)
    assert fired == []
    clock.advance(2)
    assert fired == [18]


def test_idle_only_when_every_hold_is_released() -> None:
    clock, timer, fired = started(5)
    build = timer.hold()
    stream = timer.hold()
    build()
    clock.advance(50)
    assert fired == []
    stream()
    clock.advance(5)
    assert fired == [55]


def test_releasing_twice_counts_once() -> None:
    clock, timer, fired = started(5)
    first = timer.hold()
    timer.hold()
    first()
    first()
    clock.advance(50)
    assert fired == []
    assert timer.busy


def test_zero_timeout_never_fires() -> None:
    clock, timer, fired = started(0)
    timer.hold()()
    clock.advance(10**9)
    assert fired == [] and not timer.armed


def test_stopped_timer_does_not_fire() -> None:
    clock, timer, fired = started(5)
    timer.stopService()
    clock.advance(10)
    assert fired == []
    timer.hold()()
    clock.advance(10)
    assert fired == []


def test_not_armed_before_start() -> None:
    clock = Clock()
    fired: list[float] = []
    timer = IdleTimer(clock, 5, lambda: fired.append(clock.seconds()))
    timer.hold()()
    clock.advance(10)
    assert fired == []
    timer.startService()
    clock.advance(5)
    assert fired == [15]
