"""Telling twistd how the start went: the status pipe is written once the start is known."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from databuild.service import startreport
from databuild.service.startreport import STATUS_PIPE, StartReport


def twistd_options() -> tuple[dict[str, int], int]:
    """twistd's options holding the daemon's end of a status pipe; and the launcher's end."""
    read, write = os.pipe()
    return {STATUS_PIPE: write, "nodaemon": 0}, read


def test_the_start_is_told_once_it_happened_not_when_start_service_returns() -> None:
    options, launcher = twistd_options()
    report = StartReport(options)
    report.begin()
    assert STATUS_PIPE not in options  # twistd finds no pipe to say "started" into too early
    report.succeeded()
    assert os.read(launcher, 100) == b"0"
    assert os.read(launcher, 100) == b""  # closed
    os.close(launcher)


def test_a_failed_start_is_told_in_twistds_form_and_ends_the_process_with_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at_exit: list[Callable[[], None]] = []
    monkeypatch.setattr(startreport.atexit, "register", at_exit.append)
    options, launcher = twistd_options()
    report = StartReport(options)
    report.begin()
    report.failed("cannot open the event log at postgresql://" + "x" * 200)
    told = os.read(launcher, 1000)
    os.close(launcher)
    assert told.startswith(b"1 cannot open the event log at postgresql://xxx")
    assert len(told) == 100  # twistd's launcher reads no more
    assert at_exit == [startreport._exit_failed]


def test_outside_twistd_nothing_is_told(monkeypatch: pytest.MonkeyPatch) -> None:
    at_exit: list[Callable[[], None]] = []
    monkeypatch.setattr(startreport.atexit, "register", at_exit.append)
    report = StartReport(None)
    report.begin()
    report.failed("no free port")
    assert at_exit == []
