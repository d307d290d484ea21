"""Statuses and events: names, short forms, parsing, and JSON round-trips (SPEC §4.1)."""

from __future__ import annotations

import json

import pytest

from databuild import jsontext
from databuild.bel import (
    BuildRequestEvent,
    BuildStatus,
    DelegationEvent,
    Event,
    InvalidEvent,
    InvalidStatus,
    JobEvent,
    JobGraphEvent,
    JobStatus,
    PartitionEvent,
    PartitionStatus,
    events,
)
from databuild.errors import InvalidRefError
from databuild.jsontext import compact, compact_utf8
from databuild.model import DepType, JobConfig, JobGraph, JobRun, PartitionInput, validate_refs


def test_status_values_are_the_spec_names() -> None:
    assert [s.value for s in BuildStatus] == [
        "BUILD_REQUEST_RECEIVED", "BUILD_REQUEST_PLANNING", "BUILD_REQUEST_ANALYSIS_COMPLETED",
        "BUILD_REQUEST_EXECUTING", "BUILD_REQUEST_COMPLETED", "BUILD_REQUEST_FAILED",
        "BUILD_REQUEST_CANCELLED",
    ]
    assert [s.value for s in JobStatus] == [
        "JOB_SCHEDULED", "JOB_RUNNING", "JOB_COMPLETED", "JOB_FAILED", "JOB_CANCELLED",
        "JOB_SKIPPED",
    ]
    assert [s.value for s in PartitionStatus] == [
        "PARTITION_REQUESTED", "PARTITION_SCHEDULED", "PARTITION_BUILDING",
        "PARTITION_AVAILABLE", "PARTITION_FAILED", "PARTITION_DELEGATED",
    ]


def test_short_forms_are_lower_case_without_prefix() -> None:
    assert BuildStatus.BUILD_REQUEST_ANALYSIS_COMPLETED.short == "analysis_completed"
    assert JobStatus.JOB_SKIPPED.short == "skipped"
    assert PartitionStatus.PARTITION_AVAILABLE.short == "available"


@pytest.mark.parametrize("kind", [BuildStatus, JobStatus, PartitionStatus])
def test_parse_accepts_spec_and_short_forms_in_any_case(kind: type) -> None:
    for status in kind:
        assert kind.parse(status.value) is status
        assert kind.parse(status.short) is status
        assert kind.parse(status.short.upper()) is status
        assert kind.parse(f" {status.short.title()} ") is status
        assert kind.parse(status) is status


def test_parse_refuses_other_kinds_and_names_the_choices() -> None:
    with pytest.raises(InvalidStatus, match="unknown job status 'available'; expected one of"):
        JobStatus.parse("available")
    with pytest.raises(InvalidStatus, match="unknown partition status 42"):
        PartitionStatus.parse(42)  # type: ignore[arg-type]


def test_final_statuses() -> None:
    assert {s for s in BuildStatus if s.final} == {
        BuildStatus.BUILD_REQUEST_COMPLETED, BuildStatus.BUILD_REQUEST_FAILED,
        BuildStatus.BUILD_REQUEST_CANCELLED,
    }
    assert {s for s in PartitionStatus if s.final} == {
        PartitionStatus.PARTITION_AVAILABLE, PartitionStatus.PARTITION_FAILED,
    }


GRAPH = JobGraph(
    outputs=("daily/2026-01-01",),
    job_runs=(
        JobRun(
            "r1",
            "agg",
            JobConfig(
                outputs=("daily/2026-01-01",),
                inputs=(PartitionInput("raw/2026-01-01", DepType.MATERIALIZE),),
                args=("2026-01-01",),
                env={"DATE": "2026-01-01"},
            ),
        ),
    ),
)

PAYLOADS = [
    BuildRequestEvent("received", ("daily/2026-01-01",), "hello"),
    PartitionEvent("daily/2026-01-01", "building", "", "r1"),
    PartitionEvent("daily/2026-01-01", "requested"),
    JobEvent("r1", "agg", "failed", ("daily/2026-01-01",), "exit 3", 3),
    DelegationEvent("daily/2026-01-01", "b0", "b0 is building it"),
    JobGraphEvent(GRAPH),
    JobGraphEvent(GRAPH, "01533cd1ac4eb9b9"),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.event_type)
def test_event_json_round_trips(payload: object) -> None:
    event = Event("b1", payload, idx=7)  # type: ignore[arg-type]
    data = json.loads(json.dumps(event.to_json()))
    assert list(data)[:5] == ["idx", "event_id", "timestamp", "build_request_id", "event_type"]
    assert data["event_type"] == event.event_type
    assert Event.from_json(data) == event


def test_event_json_has_the_spec_fields() -> None:
    data = Event("b1", JobEvent("r1", "agg", "completed", ("x",), exit_code=0)).to_json()
    assert data["idx"] is None
    assert isinstance(data["timestamp"], int) and data["timestamp"] > 1_700_000_000 * 10**9
    assert {k: data[k] for k in ("job_run_id", "job_label", "outputs", "status", "exit_code")} == {
        "job_run_id": "r1", "job_label": "agg", "outputs": ["x"], "status": "JOB_COMPLETED",
        "exit_code": 0,
    }
    graph = Event("b1", JobGraphEvent(GRAPH)).to_json()["job_graph"]
    assert graph["job_runs"][0]["inputs"][0]["partition_ref"] == {"str": "raw/2026-01-01"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({"event_type": "nope"}, "unknown event_type 'nope'"),
        ({"event_type": "job", "event_id": "e", "timestamp": 1, "build_request_id": "b"},
         "job event lacks field 'job_run_id'"),
        ({"event_type": "partition", "event_id": "e", "timestamp": 1, "build_request_id": "b",
          "partition_ref": "x", "status": "done"}, "unknown partition status 'done'"),
    ],
)
def test_bad_event_json_is_refused_with_a_reason(data: object, message: str) -> None:
    with pytest.raises((InvalidEvent, InvalidStatus), match=message):
        Event.from_json(data)


def test_events_validate_refs() -> None:
    with pytest.raises(InvalidRefError):
        PartitionEvent("has space", "requested")
    with pytest.raises(InvalidRefError):
        BuildRequestEvent("received", ("",))


def test_a_request_event_takes_refs_checked_at_the_door_as_they_are() -> None:
    refs = validate_refs(["daily/2026-01-01", "daily/2026-01-02"])
    assert BuildRequestEvent("received", refs).requested_partitions is refs
    # What did not come through the door's check is checked here.
    assert BuildRequestEvent("received", ["a", "b"]).requested_partitions == ("a", "b")


def test_a_job_graph_event_records_its_graph_fingerprint_and_old_ones_still_read() -> None:
    stored = Event("b1", JobGraphEvent(GRAPH, "01533cd1ac4eb9b9")).to_json()
    assert stored["graph_fingerprint"] == "01533cd1ac4eb9b9"
    del stored["graph_fingerprint"]  # as written before the service recorded it
    assert Event.from_json(stored).payload == JobGraphEvent(GRAPH, None)


BODIES = [
    *PAYLOADS,
    JobEvent("r1", "//j:a", "failed", ("x/1",), 'na\u00efve "quoted"\n\u2603 \\ \x00', 1),
]


@pytest.mark.parametrize("payload", BODIES, ids=lambda p: p.event_type)
def test_the_stored_body_is_the_compact_json_form_without_idx(payload: object) -> None:
    event = Event("b1", payload, idx=7)  # type: ignore[arg-type]
    body = compact(event.body_json())
    without_idx = {k: v for k, v in event.to_json().items() if k != "idx"}
    assert body == json.dumps(without_idx, separators=(",", ":"), ensure_ascii=False)
    assert Event.from_json({"idx": 7, **json.loads(body)}) == event


@pytest.mark.parametrize("payload", BODIES, ids=lambda p: p.event_type)
def test_a_stored_events_json_carries_the_text_of_its_json_form(payload: object) -> None:
    event = Event("b1", payload)  # type: ignore[arg-type]
    assert event.to_json().text is None  # not stored: nothing to reuse
    doc = event.stored_at(7, compact(event.body_json())).to_json()
    assert doc.text == compact(dict(doc))
    assert doc == {"idx": 7, **event.body_json()}


def test_the_compact_encoder_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        compact({"refs": {"x"}})


@pytest.mark.parametrize(("value", "ascii"), [
    ({"ref": "données/é", "message": "ünïcode ✓", "n": -3, "ok": True, "none": None}, False),
    # What orjson refuses and the standard library writes, escaped: a lone surrogate (from
    # undecodable bytes a job printed), an integer past 64 bits, a key that is no string.
    ({"message": "bad \udcff byte"}, True),
    ({"n": 2**70}, True),
    ({1: "one"}, True),
])  # fmt: skip
def test_the_compact_encoder_writes_compact_json_of_anything_json_holds(
    value: object, ascii: bool
) -> None:
    text = compact(value)
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=ascii)
    assert compact_utf8(value) == text.encode("utf-8")


def test_refs_checked_at_the_door_are_written_by_the_fast_encoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def slow(*_: object, **__: object) -> str:
        raise AssertionError("the standard library's encoder was used")

    monkeypatch.setattr(jsontext.json, "dumps", slow)
    refs = validate_refs(["a/1", "b/2"])
    assert compact_utf8({"requested_partitions": refs}) == b'{"requested_partitions":["a/1","b/2"]}'


def test_a_big_job_graph_is_stored_in_bounded_pieces_that_put_it_back_together() -> None:
    runs = tuple(
        JobRun(f"r{i}", "daily", JobConfig(outputs=(f"d/{i}",), inputs=(), args=(), env={}))
        for i in range(2_500)
    )
    graph = JobGraph(outputs=tuple(f"d/{i}" for i in range(2_500)), job_runs=runs)
    pieces = events.graph_pieces(graph, "fp")
    assert [(p.piece, p.pieces) for p in pieces] == [(0, 3), (1, 3), (2, 3)]
    assert max(len(p.job_graph.job_runs) for p in pieces) == events.GRAPH_PIECE_RUNS
    read = [Event.from_json(Event("b1", p).to_json()).payload for p in pieces]
    assert read == pieces
    assert tuple(r for p in read for r in p.job_graph.job_runs) == runs  # type: ignore[union-attr]
    assert tuple(o for p in read for o in p.job_graph.outputs) == graph.outputs  # type: ignore[union-attr]
    small = events.graph_pieces(JobGraph(outputs=("d/0",), job_runs=runs[:1]), None)
    assert [(p.piece, p.pieces, p.job_graph.job_runs) for p in small] == [(0, 1, runs[:1])]
