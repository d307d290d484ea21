"""Tables for people: aligned columns, short statuses, local times, seconds."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from databuild.cli import render

NS = 1_795_000_000_000_000_000


@pytest.fixture(autouse=True)
def utc_plus_two() -> Iterator[None]:
    """A fixed local time zone, so local times are known."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "EET-2"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_statuses_are_shown_short_and_lower_case() -> None:
    assert render.short_status("BUILD_REQUEST_ANALYSIS_COMPLETED") == "analysis_completed"
    assert render.short_status("JOB_SKIPPED") == "skipped"
    assert render.short_status("PARTITION_AVAILABLE") == "available"
    assert render.short_status(None) == "-"


def test_times_are_local_and_durations_in_seconds() -> None:
    assert render.local_time(NS) == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(NS / 1e9 + 7200))
    assert render.seconds(1.234) == "1.2s"
    assert render.seconds(1234.5) == "1234s"
    assert render.seconds(None) == "-"


def test_columns_line_up_under_their_headings() -> None:
    doc = {
        "builds": [
            {
                "build_request_id": "b" * 32,
                "status": "BUILD_REQUEST_COMPLETED",
                "requested_partitions": ["a/1", "a/2", "a/3", "a/4"],
                "created_at": NS,
                "updated_at": NS + 2_500_000_000,
                "message": "",
                "job_runs": {"JOB_COMPLETED": 3, "JOB_FAILED": 0, "JOB_SKIPPED": 1},
            },
            {
                "build_request_id": "c1",
                "status": "BUILD_REQUEST_FAILED",
                "requested_partitions": ["x"],
                "created_at": NS,
                "updated_at": None,
                "message": "boom",
                "job_runs": {},
            },
        ]
    }
    lines = render.listing(doc, "builds").splitlines()
    headings = ["BUILD", "STATUS", "CREATED", "UPDATED", "JOB", "RUNS", "PARTITIONS"]
    assert lines[0].split() == headings
    status_col = lines[0].index("STATUS")
    assert lines[1][status_col:].startswith("completed ")
    assert lines[2][status_col:].startswith("failed ")
    assert "completed 3, skipped 1" in lines[1]
    assert lines[1].endswith("a/1, a/2, a/3 (+1 more)")
    assert " - " in lines[2]


def test_an_empty_list_says_so() -> None:
    assert render.listing({"tasks": []}, "tasks") == "no tasks"


def test_a_show_document_has_fields_then_its_tables() -> None:
    text = render.details(
        {
            "build_request_id": "b1",
            "status": "BUILD_REQUEST_FAILED",
            "created_at": NS,
            "message": "job failed",
            "tasks": [
                {"job_run_id": "t1", "job_label": "ingest", "status": "JOB_FAILED",
                 "duration_s": 0.5, "exit_code": 3, "outputs": ["a/1"]},
            ],
            "partitions": [{"partition_ref": "a/1", "status": "PARTITION_FAILED"}],
        }
    )
    head, tasks, partitions = text.split("\n\n")
    assert "status:           failed" in head
    assert "message:          job failed" in head
    assert tasks.startswith("tasks:\n  TASK")
    assert "ingest" in tasks and "0.5s" in tasks
    assert partitions.splitlines()[1:] == ["  PARTITION  STATUS", "  a/1        failed"]


def test_a_job_graph_lists_runs_with_their_materialized_inputs() -> None:
    doc = {
        "job_graph": {
            "outputs": ["daily_votes/2026-01-01"],
            "job_runs": [
                {"job_run_id": "r1", "job_label": "aggregate",
                 "outputs": ["daily_votes/2026-01-01"], "inputs": [
                     {"dep_type_code": 1, "partition_ref": {"str": "c/red"}},
                     {"dep_type_code": 0, "partition_ref": {"str": "c/ignored"}},
                 ], "args": [], "env": {}},
                {"job_run_id": "r2", "job_label": "ingest", "outputs": ["c/red"],
                 "inputs": [], "args": [], "env": {}},
            ],
        }
    }
    lines = render.job_graph(doc).splitlines()
    assert lines[0] == "2 job runs for daily_votes/2026-01-01"
    assert lines[2].split() == ["aggregate", "daily_votes/2026-01-01", "c/red"]
    assert lines[3].split() == ["ingest", "c/red", "-"]


def test_log_lines_show_time_stream_and_text_or_data() -> None:
    first = render.log_line({"time": NS, "stream": "stdout", "text": "hello"})
    second = render.log_line({"time": NS, "stream": "stdout", "data": {"rows": 3}})
    piece = render.log_line({"time": NS, "stream": "stderr", "text": "ab", "continued": True})
    assert first.endswith("stdout  hello")
    assert second.endswith('stdout  {"rows": 3}')
    assert piece.endswith("stderr  ab …")


def test_control_characters_are_shown_escaped_tabs_and_newlines_stay() -> None:
    assert render.visible("a\x1b[2Jb\x07\r\x7f\x9b\x9d\u0085\tc\nd é ✓") == (
        "a\\x1b[2Jb\\x07\\x0d\\x7f\\x9b\\x9d\\x85\tc\nd é ✓"
    )


def test_every_string_of_a_document_is_made_printable_keys_too() -> None:
    doc = {"message": "\x1b]0;t\x07", "n": 3, "ok": True, "none": None,
           "tasks": [{"label\x1b": ["\x9b2J"]}]}
    assert render.printable(doc) == {
        "message": "\\x1b]0;t\\x07", "n": 3, "ok": True, "none": None,
        "tasks": [{"label\\x1b": ["\\x9b2J"]}],
    }


def test_a_raw_log_line_is_its_text_as_printed() -> None:
    assert render.raw_text({"text": "\x1b[2Jx", "stream": "stdout"}) == "\x1b[2Jx\n"
    assert render.raw_text({"text": "part", "continued": True}) == "part"


@pytest.mark.parametrize(
    "text", ["plain", "esc\x1b[2J", "tab\tand\nnewline", "del\x7f", "csi\x9b", "cr\r", "é", "bs\b"]
)
@pytest.mark.parametrize("ascii_only", [True, False])
def test_an_event_is_walked_for_controls_only_when_its_json_may_hold_one(
    text: str, ascii_only: bool
) -> None:
    raw = json.dumps({"message": text, "key\x1b": [text]}, ensure_ascii=ascii_only)
    assert render.printable_json(raw, json.loads(raw)) == render.printable(json.loads(raw))
    plain = json.dumps({"message": "plain"})
    doc = json.loads(plain)
    assert render.printable_json(plain, doc) is doc
