"""What a build's events turn into: plain lines, a live line redrawn at most every 0.2 s, JSON."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from twisted.internet.task import Clock

from databuild.bel.status import PartitionStatus
from databuild.cli.progress import (
    SHOWN_PARTITION_STATUS,
    UNSHOWN_PARTITION_STATUSES,
    BuildProgress,
    JsonDisplay,
    LiveDisplay,
    PlainDisplay,
)

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
        "failed    job_a  p/a  0.5s  exit 3: exited with code 3  "
        "[task a; log: databuild tasks logs a]",
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
    progress.apply(EVENTS[0])
    assert progress.live_line(T0 + 1 * S) == "analysing 1 ref… 1s"  # never [0 / 0]
    for e in EVENTS[1:7]:
        progress.apply(e)
    assert progress.live_line(T0 + 3 * S) == "[0 / 2] 0% 3s  1 running: p/b"
    progress.apply(EVENTS[7])
    # One run took 1.5 s since the first started (0.4 s): one more takes as long.
    assert progress.live_line(T0 + 4 * S) == "[1 / 2] 50% 4s ETA 4s"


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
    assert out.getvalue().endswith("[0 / 2] 0% 0s  1 running: p/b")


def test_finished_jobs_print_above_the_live_line() -> None:
    clock = Clock()
    out = io.StringIO()
    display = LiveDisplay(out, BuildProgress("b1"), clock.callLater,
                          clock=lambda: T0 / S + clock.seconds())
    for e in EVENTS[:8]:
        display.event(json.dumps(e), e)
    clock.advance(0.2)
    assert "\r\x1b[Kcompleted job_b  p/b  1.5s\n" in out.getvalue()
    assert out.getvalue().rsplit("\r\x1b[K", 1)[-1].startswith("[1 / 2] 50% 0s")
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


def test_the_event_types_rendered_are_the_logs_own() -> None:
    """The CLI may not import the event log; its renderer's dispatch is checked against it."""
    import ast
    import inspect

    from databuild.bel.shapes import BUILD_FINISHED, EVENT_TYPES
    from databuild.cli import progress, stream

    tree = ast.parse(inspect.getsource(progress))
    compared = {
        node.comparators[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)
        and node.left.id == "kind" and isinstance(node.comparators[0], ast.Constant)
    }
    assert compared and compared <= set(EVENT_TYPES)
    assert stream.Follower.end_event == BUILD_FINISHED


def big_build(runs: int) -> list[dict[str, Any]]:
    """A build of ``runs`` runs: every tenth fails, the rest complete, two stay running."""
    events = [
        event(1, 0, "build_request", status="BUILD_REQUEST_RECEIVED",
              requested_partitions=[f"p/{n}" for n in range(runs)], message=""),
        event(2, 1, "job_graph", job_graph={"outputs": [], "job_runs": [{}] * runs}),
        event(3, 1, "build_request", status="BUILD_REQUEST_ANALYSIS_COMPLETED",
              requested_partitions=[], message=""),
    ]
    for n in range(runs):
        events.append(job(10 + 3 * n, 2 + n / 10, str(n), "JOB_RUNNING"))
        if n < runs - 2:
            failed = n % 10 == 9
            events.append(job(11 + 3 * n, 2.05 + n / 10, str(n),
                              "JOB_FAILED" if failed else "JOB_COMPLETED",
                              exit_code=1 if failed else 0))
    return events


def test_a_big_build_on_a_terminal_lists_only_what_did_not_succeed() -> None:
    clock = Clock()
    out = io.StringIO()
    progress = BuildProgress("b1")
    display = LiveDisplay(out, progress, clock.callLater, clock=lambda: T0 / S + 40)
    events = big_build(150)
    display.event(json.dumps(events[0]), events[0])
    clock.advance(0.2)
    assert out.getvalue().endswith("analysing 150 refs… 40s")
    for e in events[1:]:
        display.event(json.dumps(e), e)
    clock.advance(0.2)
    lines = [line.rsplit("\r\x1b[K", 1)[-1] for line in out.getvalue().split("\n")]
    assert not [line for line in lines if line.startswith("completed")]
    failed = [line for line in lines if line.startswith("failed")]
    assert len(failed) == 14
    assert failed[0].endswith("[task 9; log: databuild tasks logs 9]")
    # 148 done in the 38 s since the first run started: 2 more take about 0.5 s.
    assert lines[-1] == "[148 / 150] 98% 40s ETA 1s  2 running: p/148, p/149"


def test_a_small_build_lists_every_run_and_the_status_line_cuts_running_refs() -> None:
    progress = BuildProgress("b1")
    notes = [n for e in big_build(20) for n in progress.apply(e)]
    assert len([n for n in notes if n.text.startswith("completed")]) == 17
    assert not progress.big
    for n in range(3):
        progress.apply(job(900 + n, 9, f"x{n}", "JOB_RUNNING"))
    assert progress.live_line(T0 + 10 * S).endswith(
        "5 running: p/18, p/19, p/x0 (+2 more)"
    )


def test_a_partition_already_built_is_said_so_not_waited_for() -> None:
    progress = BuildProgress("b1")
    [available] = progress.apply(event(
        1, 0, "partition", partition_ref="p/a", status="PARTITION_DELEGATED", job_run_id="r1",
        message="already available; not built again (built by build old)",
    ))
    assert available.text == (
        "available p/a: already available; not built again (built by build old)"
    )
    assert progress.apply(event(
        3, 0, "partition", partition_ref="p/b", status="PARTITION_DELEGATED", job_run_id="r2",
        message="waiting for build live",
    )) == []
    [waiting] = progress.apply(event(
        2, 0, "delegation", partition_ref="p/b", delegated_to_build_request_id="live",
        message="being built by build live",
    ))
    assert waiting.text == "waiting   p/b: being built by build live"


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


def no_op_build(refs: tuple[str, ...] = ("p/a", "p/b")) -> list[dict[str, Any]]:
    """A build of ``refs``, all already AVAILABLE: what a no-op streams."""
    requested = list(refs)
    events = [event(1, 0, "build_request", status="BUILD_REQUEST_RECEIVED",
                    requested_partitions=requested, message="")]
    for n, ref in enumerate(refs):
        events += [
            event(2 + 3 * n, 0.1, "partition", partition_ref=ref, status="PARTITION_REQUESTED",
                  message="requested", job_run_id=None),
            event(3 + 3 * n, 0.2, "partition", partition_ref=ref, status="PARTITION_DELEGATED",
                  message="already available; not built again (built by build old)",
                  job_run_id="r1"),
            event(4 + 3 * n, 0.2, "partition", partition_ref=ref, status="PARTITION_AVAILABLE",
                  message="already available", job_run_id="r1"),
        ]
    last = 2 + 3 * len(refs)
    return [
        *events,
        job(last, 0.3, "r1", "JOB_SKIPPED", message="outputs already available"),
        event(last + 1, 0.4, "build_request", status="BUILD_REQUEST_COMPLETED",
              requested_partitions=requested, message=""),
    ]


@pytest.mark.parametrize(("count", "lines"), [
    (2, 2),
    # Over BIG_BUILD_RUNS refs: no line each, on a terminal or not (SPEC §6 lists runs).
    (150, 0),
])
def test_the_refs_already_available_get_a_line_each_only_in_a_small_request(
    count: int, lines: int
) -> None:
    refs = tuple(f"p/{n}" for n in range(count))
    finished = {"build_request_id": "b1", "status": "BUILD_REQUEST_COMPLETED", "message": ""}
    for kind in ("live", "plain"):
        out = io.StringIO()
        progress = BuildProgress("b1")
        display = (LiveDisplay(out, progress, Clock().callLater) if kind == "live"
                   else PlainDisplay(out, progress))
        for e in no_op_build(refs):
            display.event(json.dumps(e), e)
        display.finished(json.dumps(finished), finished)
        shown = out.getvalue()
        assert shown.count("available p/") == lines, kind
        assert shown.endswith("build b1 completed in 0.4s (1 skipped)\n"), kind


def test_a_display_asks_for_delegated_refs_only_when_it_would_give_them_lines() -> None:
    unshown = set(UNSHOWN_PARTITION_STATUSES)
    for requested, omitted in ((2, unshown), (150, unshown | {SHOWN_PARTITION_STATUS}),
                               (0, unshown)):  # fmt: skip
        progress = BuildProgress("b1", requested=requested)
        for display in (PlainDisplay(io.StringIO(), progress),
                        LiveDisplay(io.StringIO(), progress, Clock().callLater)):  # fmt: skip
            assert set(display.omit) == omitted, (requested, display)
    # ``tail`` learns the number from the build's first event, once the stream is asked for.
    progress = BuildProgress("b1")
    progress.apply(no_op_build(tuple(f"p/{n}" for n in range(150)))[0])
    assert progress.many_refs and SHOWN_PARTITION_STATUS in progress.omit


def test_only_the_partition_events_a_display_shows_are_parsed_and_it_prints_the_same() -> None:
    events = no_op_build()
    finished = {"build_request_id": "b1", "status": "BUILD_REQUEST_COMPLETED", "message": ""}
    shown = {}
    for name, wanted in (("all", lambda kind, data: True), ("wanted", BuildProgress.wants)):
        out = io.StringIO()
        display = PlainDisplay(out, BuildProgress("b1"))
        for e in events:
            if wanted(e["event_type"], json.dumps(e)):
                display.event(json.dumps(e), e)
        display.finished(json.dumps(finished), finished)
        shown[name] = out.getvalue()
    assert shown["wanted"] == shown["all"]
    assert "available p/b: already available" in shown["all"]
    assert shown["all"].endswith("build b1 completed in 0.4s (1 skipped)\n")
    kept = [e["status"] for e in events if BuildProgress.wants(e["event_type"], json.dumps(e))]
    assert "PARTITION_REQUESTED" not in kept and "PARTITION_AVAILABLE" not in kept
    assert kept.count("PARTITION_DELEGATED") == 2 and "JOB_SKIPPED" in kept
    assert JsonDisplay(io.StringIO()).wants("partition", "{}")


def test_the_partition_statuses_the_cli_shows_and_leaves_out_are_every_status_once() -> None:
    unshown = set(UNSHOWN_PARTITION_STATUSES)
    assert SHOWN_PARTITION_STATUS not in unshown
    assert unshown | {SHOWN_PARTITION_STATUS} == {s.value for s in PartitionStatus}
    assert len(unshown) == len(UNSHOWN_PARTITION_STATUSES)
