"""What a build's events turn into: plain lines, a live line redrawn at most every 0.2 s, JSON."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.task import Clock

from databuild.cli.progress import BuildProgress, JsonDisplay, LiveDisplay, PlainDisplay

S = 1_000_000_000
T0 = 1_795_000_000 * S


def event(idx: int, at_s: float, kind: str, **fields: Any) -> dict[str, Any]:
    return {"idx": idx, "event_id": f"e{idx}", "timestamp": T0 + int(at_s * S),
            "build_request_id": "b1", "event_type": kind, **fields}


def job(idx: int, at_s: float, run: str, status: str, **fields: Any) -> dict[str, Any]:
    return event(idx, at_s, "job", job_run_id=run, job_label=f"job_{run}", outputs=[f"p/{run}"],
                 status=status, message=fields.pop("message", ""),
                 exit_code=fields.pop("exit_code", None))


EVENTS = [
    event(1, 0, "build_request", status="BUILD_REQUEST_RECEIVED",
          requested_partitions=["p/a"], message=""),
    event(2, 0.1, "build_request", status="BUILD_REQUEST_PLANNING",
          requested_partitions=["p/a"], message=""),
    event(3, 0.2, "job_graph", job_graph={"outputs": ["p/a"], "job_runs": [{}, {}]}),
    event(4, 0.2, "build_request", status="BUILD_REQUEST_ANALYSIS_COMPLETED",
          requested_partitions=["p/a"], message=""),
    job(5, 0.3, "b", "JOB_SCHEDULED"),
    job(6, 0.3, "a", "JOB_SCHEDULED"),
    job(7, 0.4, "b", "JOB_RUNNING"),
    job(8, 1.9, "b", "JOB_COMPLETED", exit_code=0),
    job(9, 2.0, "a", "JOB_RUNNING"),
    job(10, 2.5, "a", "JOB_FAILED", exit_code=3, message="exited with code 3"),
    event(11, 2.6, "build_request", status="BUILD_REQUEST_FAILED",
          requested_partitions=["p/a"], message="1 job run failed"),
]
FINISHED = {"build_request_id": "b1", "status": "BUILD_REQUEST_FAILED",
            "message": "1 job run failed"}


def test_plain_lines_tell_the_build_and_each_job_run() -> None:
    out = io.StringIO()
    display = PlainDisplay(out, BuildProgress("b1"))
    for e in EVENTS:
        display.event(json.dumps(e), e)
    display.finished(json.dumps(FINISHED), FINISHED)
    assert out.getvalue().splitlines() == [
        "build b1: p/a",
        "analysed: 2 job runs",
        "started   job_b  p/b",
        "completed job_b  p/b  1.5s",
        "started   job_a  p/a",
        "failed    job_a  p/a  0.5s  exit 3: exited with code 3",
        "build b1 failed in 2.6s (1 completed, 1 failed): 1 job run failed",
    ]
    assert "\x1b" not in out.getvalue()


def test_json_lines_are_the_events_as_sent_then_build_finished() -> None:
    out = io.StringIO()
    display = JsonDisplay(out)
    raws = [json.dumps(e, separators=(",", ":")) for e in EVENTS]
    for raw, e in zip(raws, EVENTS, strict=True):
        display.event(raw, e)
    display.finished(json.dumps(FINISHED), FINISHED)
    lines = out.getvalue().splitlines()
    assert lines[:-1] == raws
    assert json.loads(lines[-1]) == FINISHED


def test_live_line_counts_done_running_and_total() -> None:
    progress = BuildProgress("b1")
    for e in EVENTS[:7]:
        progress.apply(e)
    assert progress.live_line(T0 + 3 * S) == "[0 / 2] 3s  1 running: job_b"
    progress.apply(EVENTS[7])
    assert progress.live_line(T0 + 4 * S) == "[1 / 2] 4s"


def test_live_display_redraws_at_most_every_fifth_of_a_second() -> None:
    clock = Clock()
    out = io.StringIO()
    display = LiveDisplay(out, BuildProgress("b1"), clock.callLater,
                          clock=lambda: T0 / S + clock.seconds())
    redraws = []

    def count() -> None:
        redraws.append(out.getvalue().count("\r\x1b[K"))

    for e in EVENTS[:7]:  # a burst: one job starts, nothing finishes, no redraw in between
        display.event(json.dumps(e), e)
    count()
    clock.advance(0.1)
    count()
    clock.advance(0.1)
    count()
    assert redraws[0] == redraws[1] < redraws[2]
    assert out.getvalue().endswith("[0 / 2] 0s  1 running: job_b")


def test_finished_jobs_print_above_the_live_line() -> None:
    clock = Clock()
    out = io.StringIO()
    display = LiveDisplay(out, BuildProgress("b1"), clock.callLater,
                          clock=lambda: T0 / S + clock.seconds())
    for e in EVENTS[:8]:
        display.event(json.dumps(e), e)
    clock.advance(0.2)
    assert "\r\x1b[Kcompleted job_b  p/b  1.5s\n" in out.getvalue()
    assert out.getvalue().rsplit("\r\x1b[K", 1)[-1] == "[1 / 2] 0s"
    display.finished(json.dumps(FINISHED), FINISHED)
    assert out.getvalue().endswith("\r\x1b[Kbuild b1 failed in 1.9s (1 completed, 1 scheduled): "
                                   "1 job run failed\n")
    assert clock.getDelayedCalls() == []


def test_a_long_failure_reason_continues_on_indented_lines() -> None:
    progress = BuildProgress("b1")
    line = progress.summary({"status": "BUILD_REQUEST_FAILED", "message": "analysis failed\nwhy"})
    assert line == "build b1 failed (no job runs): analysis failed\n  why"


def test_after_the_live_line_is_closed_events_print_as_plain_lines() -> None:
    clock = Clock()
    out = io.StringIO()
    display = LiveDisplay(out, BuildProgress("b1"), clock.callLater,
                          clock=lambda: T0 / S + clock.seconds())
    for e in EVENTS[:7]:
        display.event(json.dumps(e), e)
    clock.advance(0.2)
    display.close()
    before = out.getvalue()
    display.event(json.dumps(EVENTS[7]), EVENTS[7])
    clock.advance(1)
    assert out.getvalue()[len(before):] == "\r\x1b[Kcompleted job_b  p/b  1.5s\n"


def test_runs_cancelled_before_they_started_are_told_in_one_line() -> None:
    progress = BuildProgress("b1")
    events = [
        event(1, 0, "build_request", status="BUILD_REQUEST_RECEIVED",
              requested_partitions=["p/a"], message=""),
        job(2, 0.1, "a", "JOB_SCHEDULED"),
        job(3, 0.2, "a", "JOB_RUNNING"),
        *(job(4 + i, 0.3, f"w{i}", "JOB_SCHEDULED") for i in range(73)),
        job(80, 1.0, "a", "JOB_CANCELLED", message="build cancelled by request"),
        *(job(81 + i, 1.0, f"w{i}", "JOB_CANCELLED", message="build cancelled by request")
          for i in range(73)),
        event(160, 1.1, "build_request", status="BUILD_REQUEST_CANCELLED",
              requested_partitions=[], message="build cancelled by request"),
    ]
    lines = [note.text for e in events for note in progress.apply(e) if not note.started]
    assert lines == [
        "build b1: p/a",
        "cancelled job_a  p/a  0.8s: build cancelled by request",
        "73 job runs cancelled before they started",
    ]


def test_a_job_graph_in_pieces_counts_the_runs_of_every_piece() -> None:
    progress = BuildProgress("b1")
    progress.apply(EVENTS[0])
    for piece, runs in enumerate([1000, 1000, 500]):
        progress.apply(event(3 + piece, 0.2, "job_graph", piece=piece, pieces=3,
                             job_graph={"outputs": [], "job_runs": [{}] * runs}))
    notes = progress.apply(event(6, 0.3, "build_request", message="", requested_partitions=[],
                                 status="BUILD_REQUEST_ANALYSIS_COMPLETED"))
    assert progress.planned == 2500
    assert [n.text for n in notes] == ["analysed: 2500 job runs"]
