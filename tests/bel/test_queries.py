"""Read queries: shapes of SPEC §5.5, newest first, filters and paging of SPEC §5.4."""

from __future__ import annotations

import fnmatch
from typing import Any

import attrs
import pytest
import pytest_twisted

from databuild.bel import (
    BuildRequestEvent,
    BuildStatus,
    DelegationEvent,
    Event,
    EventLog,
    InvalidQuery,
    InvalidStatus,
    JobEvent,
    JobStatus,
    PartitionEvent,
    PartitionStatus,
    shapes,
)
from databuild.bel.shapes import EVENT_TYPES, SCHEMAS, page

from .conftest import Recorder

B, J, P = BuildStatus, JobStatus, PartitionStatus
SECOND = 10**9
T0 = 1_795_000_000 * SECOND
TO_EXECUTING = (B.BUILD_REQUEST_PLANNING, B.BUILD_REQUEST_ANALYSIS_COMPLETED,
                B.BUILD_REQUEST_EXECUTING)


@attrs.define
class History:
    """Appends events with a clock that moves one second per event."""

    log: EventLog
    now: int = T0

    async def add(self, build_id: str, payload: Any) -> Event:
        self.now += SECOND
        return await self.log.append(Event(build_id, payload, timestamp=self.now))

    async def build(self, build_id: str, refs: tuple[str, ...], *statuses: BuildStatus) -> None:
        await self.add(build_id, BuildRequestEvent(B.BUILD_REQUEST_RECEIVED, refs, "new"))
        for status in statuses:
            await self.add(build_id, BuildRequestEvent(status, (), status.short))

    async def run(
        self, build_id: str, run_id: str, label: str, ref: str, *statuses: JobStatus,
        exit_code: int | None = None,
    ) -> None:
        for status in statuses:
            code = exit_code if status.final else None
            await self.add(
                build_id, JobEvent(run_id, label, status, (ref,), status.short, code)
            )

    async def partition(
        self, build_id: str, ref: str, *statuses: PartitionStatus, run_id: str | None = None
    ) -> None:
        for status in statuses:
            await self.add(build_id, PartitionEvent(ref, status, status.short, run_id))


@pytest_twisted.async_fixture
async def history(event_log: EventLog) -> History:
    """Five builds:

    - b1 COMPLETED: ingest r1 ran 2 s and made raw/01 AVAILABLE;
    - b2 FAILED: agg r2 ran 4 s, exit 3, daily/01 FAILED;
    - b3 PLANNING; b4 CANCELLED;
    - b5 EXECUTING: ingest r3 RUNNING for raw/02; raw/01 already AVAILABLE (r4 skipped,
      raw/01 DELEGATED then AVAILABLE);
      daily/01 delegated to b4, then AVAILABLE.
    """
    h = History(event_log)
    await h.build("b1", ("raw/01",), *TO_EXECUTING)
    await h.partition("b1", "raw/01", P.PARTITION_REQUESTED)
    await h.run("b1", "r1", "ingest", "raw/01", J.JOB_SCHEDULED)
    await h.partition("b1", "raw/01", P.PARTITION_SCHEDULED, run_id="r1")
    await h.run("b1", "r1", "ingest", "raw/01", J.JOB_RUNNING)
    await h.partition("b1", "raw/01", P.PARTITION_BUILDING, run_id="r1")
    await h.run("b1", "r1", "ingest", "raw/01", J.JOB_COMPLETED, exit_code=0)
    await h.partition("b1", "raw/01", P.PARTITION_AVAILABLE, run_id="r1")
    await h.add("b1", BuildRequestEvent(B.BUILD_REQUEST_COMPLETED))

    await h.build("b2", ("daily/01",), *TO_EXECUTING)
    await h.run("b2", "r2", "agg", "daily/01", J.JOB_SCHEDULED, J.JOB_RUNNING)
    await h.partition("b2", "daily/01", P.PARTITION_SCHEDULED, P.PARTITION_BUILDING,
                      run_id="r2")
    await h.add("b2", JobEvent("r2", "agg", J.JOB_FAILED, ("daily/01",), "boom", 3))
    await h.add("b2", JobEvent("r9", "agg", J.JOB_SCHEDULED, ("daily/02",)))
    await h.add("b2", JobEvent("r9", "agg", J.JOB_CANCELLED, ("daily/02",)))
    await h.partition("b2", "daily/01", P.PARTITION_FAILED, run_id="r2")
    await h.add("b2", BuildRequestEvent(B.BUILD_REQUEST_FAILED, (), "agg failed"))

    await h.build("b3", ("x/1",), B.BUILD_REQUEST_PLANNING)
    await h.build("b4", ("x/2",), B.BUILD_REQUEST_CANCELLED)

    await h.build("b5", ("raw/02", "raw/01", "daily/01"), *TO_EXECUTING)
    await h.partition("b5", "raw/01", P.PARTITION_REQUESTED)
    await h.run("b5", "r4", "ingest", "raw/01", J.JOB_SCHEDULED, J.JOB_SKIPPED)
    await h.partition("b5", "raw/01", P.PARTITION_DELEGATED, P.PARTITION_AVAILABLE, run_id="r4")
    await h.partition("b5", "daily/01", P.PARTITION_REQUESTED)
    await h.add("b5", DelegationEvent("daily/01", "b4", "b4 builds it"))
    await h.partition("b5", "daily/01", P.PARTITION_DELEGATED, P.PARTITION_AVAILABLE)
    await h.run("b5", "r3", "ingest", "raw/02", J.JOB_SCHEDULED, J.JOB_RUNNING)
    await h.partition("b5", "raw/02", P.PARTITION_SCHEDULED, P.PARTITION_BUILDING, run_id="r3")
    return h


def ids(items: list[dict[str, Any]], key: str) -> list[str]:
    return [item[key] for item in items]


@pytest_twisted.ensureDeferred
async def test_builds_are_listed_newest_first_with_job_run_counts(
    event_log: EventLog, history: History
) -> None:
    builds = (await event_log.list_builds())["builds"]
    assert ids(builds, "build_request_id") == ["b5", "b4", "b3", "b2", "b1"]
    b2 = builds[3]
    assert b2["status"] == "BUILD_REQUEST_FAILED"
    assert b2["requested_partitions"] == ["daily/01"]
    assert b2["message"] == "agg failed"
    assert b2["created_at"] < b2["updated_at"]
    assert b2["job_runs"] == {
        "JOB_SCHEDULED": 0, "JOB_RUNNING": 0, "JOB_COMPLETED": 0, "JOB_FAILED": 1,
        "JOB_CANCELLED": 1, "JOB_SKIPPED": 0,
    }
    assert builds[0]["job_runs"]["JOB_RUNNING"] == 1
    assert builds[0]["job_runs"]["JOB_SKIPPED"] == 1


@pytest_twisted.ensureDeferred
async def test_builds_filter_by_status_in_either_form_and_page(
    event_log: EventLog, history: History
) -> None:
    for status in ("failed", "BUILD_REQUEST_FAILED", B.BUILD_REQUEST_FAILED):
        assert ids((await event_log.list_builds(status))["builds"], "build_request_id") == ["b2"]
    assert (await event_log.list_builds("completed"))["builds"][0]["build_request_id"] == "b1"
    assert (await event_log.list_builds("executing"))["builds"][0]["build_request_id"] == "b5"
    page = await event_log.list_builds(limit=2, offset=1)
    assert ids(page["builds"], "build_request_id") == ["b4", "b3"]
    assert (await event_log.list_builds(offset=5))["builds"] == []
    assert await event_log.unfinished_builds() == ["b3", "b5"]


@pytest_twisted.ensureDeferred
async def test_get_build_adds_its_tasks_and_partitions(
    event_log: EventLog, history: History
) -> None:
    assert await event_log.get_build("nope") is None
    b5 = await event_log.get_build("b5")
    assert b5["status"] == "BUILD_REQUEST_EXECUTING"
    assert ids(b5["tasks"], "job_run_id") == ["r3", "r4"]
    assert b5["partitions"] == [
        {"partition_ref": "daily/01", "status": "PARTITION_AVAILABLE"},
        {"partition_ref": "raw/01", "status": "PARTITION_AVAILABLE"},
        {"partition_ref": "raw/02", "status": "PARTITION_BUILDING"},
    ]


@pytest_twisted.ensureDeferred
async def test_partition_catalog_holds_the_status_of_each_refs_data(
    event_log: EventLog, history: History
) -> None:
    """Only runs that ran change the catalog: b5's DELEGATED → AVAILABLE stay in b5's list."""
    partitions = (await event_log.list_partitions())["partitions"]
    assert partitions == [
        {"partition_ref": "raw/02", "status": "PARTITION_BUILDING", "updated_at": history.now,
         "build_request_id": "b5", "job_run_id": "r3", "job_label": "ingest"},
        {"partition_ref": "daily/01", "status": "PARTITION_FAILED",
         "updated_at": history.now - 22 * SECOND, "build_request_id": "b2",
         "job_run_id": "r2", "job_label": "agg"},
        {"partition_ref": "raw/01", "status": "PARTITION_AVAILABLE",
         "updated_at": history.now - 35 * SECOND, "build_request_id": "b1",
         "job_run_id": "r1", "job_label": "ingest"},
    ]
    assert await event_log.partition_statuses(["raw/01", "raw/02", "unknown/1"]) == {
        "raw/01": P.PARTITION_AVAILABLE, "raw/02": P.PARTITION_BUILDING,
    }


@pytest_twisted.ensureDeferred
async def test_a_ref_no_run_touched_shows_its_latest_bookkeeping_status(
    event_log: EventLog, history: History
) -> None:
    await history.build("b6", ("fresh/1",), B.BUILD_REQUEST_PLANNING)
    await history.partition("b6", "fresh/1", P.PARTITION_REQUESTED)
    assert await event_log.partition_statuses(["fresh/1"]) == {"fresh/1": P.PARTITION_REQUESTED}
    await history.partition("b6", "fresh/1", P.PARTITION_FAILED)
    assert (await event_log.get_partition("fresh/1"))["status"] == "PARTITION_FAILED"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("raw/*", ["raw/02", "raw/01"]),
        ("raw/0?", ["raw/02", "raw/01"]),
        ("*/01", ["daily/01", "raw/01"]),
        ("[dr]a*/01", ["daily/01", "raw/01"]),
        ("[!r]*", ["daily/01"]),
        ("raw/01", ["raw/01"]),
        ("raw", []),
        ("r.w/*", []),
        ("*", ["raw/02", "daily/01", "raw/01"]),
        ("*ly/01", ["daily/01"]),
        ("*/0[12]", ["raw/02", "daily/01", "raw/01"]),
        ("*a*/01", ["daily/01", "raw/01"]),
        ("*/02", ["raw/02"]),
    ],
)
@pytest_twisted.ensureDeferred
async def test_partitions_filter_by_glob_pattern(
    event_log: EventLog, history: History, pattern: str, expected: list[str]
) -> None:
    found = (await event_log.list_partitions(pattern=pattern))["partitions"]
    assert ids(found, "partition_ref") == expected


@pytest_twisted.ensureDeferred
async def test_partitions_filter_by_status_and_page(
    event_log: EventLog, history: History
) -> None:
    available = await event_log.list_partitions(status="available")
    assert ids(available["partitions"], "partition_ref") == ["raw/01"]
    both = await event_log.list_partitions(status="PARTITION_AVAILABLE", pattern="raw/*")
    assert ids(both["partitions"], "partition_ref") == ["raw/01"]
    page = await event_log.list_partitions(limit=1, offset=1)
    assert ids(page["partitions"], "partition_ref") == ["daily/01"]


@pytest_twisted.ensureDeferred
async def test_get_partition_adds_history_and_producing_runs(
    event_log: EventLog, history: History
) -> None:
    assert await event_log.get_partition("nope/1") is None
    daily = await event_log.get_partition("daily/01")
    assert daily["status"] == "PARTITION_FAILED"
    history = [(e["build_request_id"], e["event_type"], e.get("status")) for e in daily["history"]]
    assert history == [
        ("b2", "partition", "PARTITION_SCHEDULED"),
        ("b2", "partition", "PARTITION_BUILDING"),
        ("b2", "partition", "PARTITION_FAILED"),
        ("b5", "partition", "PARTITION_REQUESTED"),
        ("b5", "delegation", None),
        ("b5", "partition", "PARTITION_DELEGATED"),
        ("b5", "partition", "PARTITION_AVAILABLE"),
    ]
    assert ids(daily["job_runs"], "job_run_id") == ["r2"]
    assert ids((await event_log.get_partition("raw/01"))["job_runs"], "job_run_id") == [
        "r4", "r1",
    ]


@pytest_twisted.ensureDeferred
async def test_jobs_have_run_statistics(event_log: EventLog, history: History) -> None:
    jobs = (await event_log.list_jobs())["jobs"]
    assert ids(jobs, "job_label") == ["ingest", "agg"]
    ingest, agg = jobs
    r3_started = history.now - 2 * SECOND
    assert ingest == {
        "job_label": "ingest", "runs": 2, "succeeded": 1, "failed": 0,
        "mean_duration_s": 2.0, "last_run_at": r3_started, "skipped": 1,
    }
    assert agg["runs"] == 2 and agg["succeeded"] == 0 and agg["failed"] == 1
    assert agg["skipped"] == 0
    assert agg["mean_duration_s"] == 3.0
    assert await event_log.get_job("agg") == agg
    assert await event_log.get_job("nope") is None
    assert ids((await event_log.list_jobs(limit=1, offset=1))["jobs"], "job_label") == ["agg"]


@pytest_twisted.ensureDeferred
async def test_tasks_have_times_and_filter(event_log: EventLog, history: History) -> None:
    r1 = await event_log.get_task("r1")
    assert r1["status"] == "JOB_COMPLETED" and r1["exit_code"] == 0
    assert r1["ended_at"] - r1["started_at"] == 2 * SECOND and r1["duration_s"] == 2.0
    assert r1["outputs"] == ["raw/01"] and r1["build_request_id"] == "b1"
    assert r1["message"] == "completed"
    r3 = await event_log.get_task("r3")
    assert r3["started_at"] is not None and r3["ended_at"] is None and r3["duration_s"] is None
    assert await event_log.get_task("nope") is None

    async def task_ids(**filters: Any) -> list[str]:
        return ids((await event_log.list_tasks(**filters))["tasks"], "job_run_id")

    assert await task_ids() == ["r3", "r4", "r9", "r2", "r1"]
    assert await task_ids(build_request_id="b2") == ["r9", "r2"]
    assert await task_ids(job_label="ingest") == ["r3", "r4", "r1"]
    assert await task_ids(status="failed") == ["r2"]
    assert await task_ids(status="JOB_SKIPPED") == ["r4"]
    assert await task_ids(job_label="ingest", status="completed") == ["r1"]
    assert await task_ids(build_request_id="b5", job_label="agg") == []
    assert await task_ids(limit=2, offset=2) == ["r9", "r2"]


@pytest_twisted.ensureDeferred
async def test_events_page_forward_from_since(event_log: EventLog, history: History) -> None:
    first = await event_log.events(limit=3)
    assert [e["idx"] for e in first["events"]] == [1, 2, 3]
    assert first["next_since"] == 3
    second = await event_log.events(since=first["next_since"], limit=2)
    assert [e["idx"] for e in second["events"]] == [4, 5]
    everything = []
    since = 0
    while page := (await event_log.events(since=since, limit=7))["events"]:
        everything += page
        since = page[-1]["idx"]
    assert [e["idx"] for e in everything] == list(range(1, len(everything) + 1))
    end = await event_log.events(since=since)
    assert end == {"events": [], "next_since": since}


@pytest_twisted.ensureDeferred
async def test_events_filter_by_build_partition_and_job(
    event_log: EventLog, history: History
) -> None:
    b3 = (await event_log.events(build_request_id="b3"))["events"]
    assert [(e["event_type"], e["status"]) for e in b3] == [
        ("build_request", "BUILD_REQUEST_RECEIVED"), ("build_request", "BUILD_REQUEST_PLANNING"),
    ]
    raw02 = (await event_log.events(partition_ref="raw/02"))["events"]
    assert [e["status"] for e in raw02] == ["PARTITION_SCHEDULED", "PARTITION_BUILDING"]
    agg = (await event_log.events(job_label="agg"))["events"]
    assert {e["job_run_id"] for e in agg} == {"r2", "r9"}
    assert [e["event_type"] for e in agg].count("partition") == 3
    both = (await event_log.events(build_request_id="b5", job_label="ingest"))["events"]
    assert {e["build_request_id"] for e in both} == {"b5"} and len(both) == 8
    later = await event_log.events(since=agg[0]["idx"], job_label="agg", limit=1)
    assert later["events"] == agg[1:2] and later["next_since"] == agg[1]["idx"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be an integer between 1 and 1000, got 0"),
        ({"limit": 1001}, "limit must be an integer between 1 and 1000"),
        ({"limit": "ten"}, "limit must be an integer, got 'ten'"),
        ({"offset": -1}, "offset must be an integer between 0 and 9223372036854775807, got -1"),
        ({"offset": 2**63}, "offset must be an integer between 0 and 9223372036854775807"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_paging_is_refused(event_log: EventLog, kwargs: dict, message: str) -> None:
    for query in (event_log.list_builds, event_log.list_partitions, event_log.list_jobs,
                  event_log.list_tasks):
        with pytest.raises(InvalidQuery, match=message):
            await query(**kwargs)


@pytest_twisted.ensureDeferred
async def test_paging_accepts_numbers_as_text_and_the_bounds(
    event_log: EventLog, history: History
) -> None:
    assert len((await event_log.list_builds(limit="2", offset="1"))["builds"]) == 2
    assert len((await event_log.list_builds(limit=1000))["builds"]) == 5
    assert len((await event_log.events(since="3", limit=1000))["events"]) > 0
    with pytest.raises(InvalidQuery, match=f"since must be an integer between 0 and {2**63 - 1}"):
        await event_log.events(since=-1)


@pytest_twisted.ensureDeferred
async def test_unknown_status_filter_is_refused(event_log: EventLog) -> None:
    with pytest.raises(InvalidStatus, match="unknown build request status 'done'"):
        await event_log.list_builds(status="done")
    with pytest.raises(InvalidStatus, match="unknown partition status"):
        await event_log.list_partitions(status="completed")
    with pytest.raises(InvalidStatus, match="unknown job status"):
        await event_log.list_tasks(status="available")


TRIGRAM_REFS = (
    "daily/1999-01-01/teal",
    "daily/1999-01-02/teal",
    "weekly/1999-01-01/red",
    "daily/2000-01-01/teal",
    "sale/50%_off/a\\b",
    "sale/50x_off/a",
    "sale/50%yoff/a",
    "sale/500_off/a",
    "Daily/1999-01-01/TEAL",
)


@pytest_twisted.async_fixture
async def refs_newest_first(event_log: EventLog) -> list[str]:
    """A catalog of TRIGRAM_REFS; the first is updated last, so it is the newest."""
    h = History(event_log)
    await h.build("b1", TRIGRAM_REFS, *TO_EXECUTING)
    for ref in TRIGRAM_REFS:
        await h.partition("b1", ref, P.PARTITION_REQUESTED)
    await h.partition("b1", TRIGRAM_REFS[0], P.PARTITION_DELEGATED)
    return [TRIGRAM_REFS[0], *reversed(TRIGRAM_REFS[1:])]


@pytest.mark.parametrize(
    "pattern",
    [
        "*1999-01-01*",
        "*1999-01-0?*",
        "*1999-01-0[12]*",
        "*1999-01-0[!2]/teal",
        "*-01-01*",
        "*eal",
        "*TEAL*",
        "*y/1999*l",
        "*/1999-01-01/te?l*",
        "*50%_off*",
        "*50%*",
        "*_off*",
        "*0_o*",
        "*a\\b*",
        "*%y*",
        "*/a*",
        "*9*",
        "*[1]999*",
        "*nowhere*",
    ],
)
@pytest_twisted.ensureDeferred
async def test_globs_with_literal_text_inside_match_exactly_newest_first_and_page(
    event_log: EventLog, refs_newest_first: list[str], pattern: str
) -> None:
    expected = [ref for ref in refs_newest_first if fnmatch.fnmatchcase(ref, pattern)]
    found = (await event_log.list_partitions(pattern=pattern, limit=1000))["partitions"]
    assert ids(found, "partition_ref") == expected
    for offset in range(len(expected) + 1):
        page = (await event_log.list_partitions(pattern=pattern, limit=1, offset=offset))
        assert ids(page["partitions"], "partition_ref") == expected[offset : offset + 1]


@pytest_twisted.ensureDeferred
async def test_refs_added_after_opening_are_found_by_their_inner_text(
    event_log: EventLog, refs_newest_first: list[str]
) -> None:
    h = History(event_log)
    await h.build("b2", ("late/1999-01-01/x",), *TO_EXECUTING)
    await h.partition("b2", "late/1999-01-01/x", P.PARTITION_REQUESTED)
    found = (await event_log.list_partitions(pattern="*1999-01-01*"))["partitions"]
    assert ids(found, "partition_ref") == [
        "late/1999-01-01/x", "daily/1999-01-01/teal", "Daily/1999-01-01/TEAL",
        "weekly/1999-01-01/red",
    ]


# --- lists say when they are cut; ids by unique prefix ---------------------------------------


@pytest_twisted.ensureDeferred
async def test_lists_carry_total_and_has_more(event_log: EventLog, history: History) -> None:
    whole = await event_log.list_builds()
    assert (whole["total"], whole["has_more"]) == (5, False)
    first = await event_log.list_builds(limit=2)
    assert (len(first["builds"]), first["total"], first["has_more"]) == (2, 5, True)
    last = await event_log.list_builds(limit=2, offset=4)
    assert (len(last["builds"]), last["total"], last["has_more"]) == (1, 5, False)
    beyond = await event_log.list_builds(offset=9)
    assert (beyond["builds"], beyond["total"], beyond["has_more"]) == ([], 5, False)
    failed = await event_log.list_builds("failed", limit=1)
    assert (failed["total"], failed["has_more"]) == (1, False)
    for listed, key in (
        (await event_log.list_tasks(None, None, None, 1, 0), "tasks"),
        (await event_log.list_partitions(None, None, 1, 0), "partitions"),
        (await event_log.list_jobs(1, 0), "jobs"),
    ):
        assert len(listed[key]) == 1 and listed["has_more"] is True
        assert isinstance(listed["total"], int) and listed["total"] > 1
    globbed = await event_log.list_partitions(None, "*", 1, 0)
    assert (globbed["total"], globbed["has_more"]) == (None, True)  # a glob is never counted


@pytest_twisted.ensureDeferred
async def test_ids_resolve_by_unique_prefix_of_six_or_more(
    event_log: EventLog, recorder: Recorder
) -> None:
    for build_id in ("abcdef01", "abcdef02", "abcdff00"):
        await recorder.build(build_id=build_id)
    await recorder.job("abcdef01", "job", ("out/1",), (J.JOB_SCHEDULED,), run_id="runrun-1")
    assert await event_log.resolve_id("build", "abcdef") == ["abcdef01", "abcdef02"]
    assert await event_log.resolve_id("build", "abcdef0") == ["abcdef01", "abcdef02"]
    assert await event_log.resolve_id("build", "abcdef02") == ["abcdef02"]
    assert await event_log.resolve_id("build", "abcdff") == ["abcdff00"]
    assert await event_log.resolve_id("build", "abcde") == ["abcde"]  # too short: as given
    assert await event_log.resolve_id("build", "zzzzzzz") == ["zzzzzzz"]  # none: as given
    assert await event_log.resolve_id("task", "runrun") == ["runrun-1"]


def validator(shape: Any) -> Any:
    """A validator of ``shape``, its ``$ref``s resolved among the read side's shapes."""
    import jsonschema_rs

    return jsonschema_rs.validator_for({**shape, "components": {"schemas": SCHEMAS}})


@pytest_twisted.ensureDeferred
async def test_every_answer_has_the_shape_the_api_documents(
    event_log: EventLog, history: History
) -> None:
    """The read side and the OpenAPI document share ``bel/shapes.py``: what one returns is
    what the other describes."""
    answers = [
        (await event_log.list_builds(None, 10, 0), page("builds", "Build")),
        (await event_log.get_build("b5"), shapes.ref("BuildDetail")),
        (await event_log.list_partitions(None, None, 10, 0), page("partitions", "Partition")),
        (await event_log.get_partition("raw/01"), shapes.ref("PartitionDetail")),
        (await event_log.list_jobs(10, 0), page("jobs", "Job")),
        (await event_log.get_job("ingest"), shapes.ref("Job")),
        (await event_log.list_tasks(None, None, None, 10, 0), page("tasks", "Task")),
        (await event_log.get_task("r2"), shapes.ref("Task")),
    ]
    for answer, shape in answers:
        validator(shape).validate(answer)
    for event in (await event_log.events(0, 100, None, None, None))["events"]:
        validator(shapes.ref("Event")).validate(event)
        assert event["event_type"] in EVENT_TYPES


@pytest_twisted.ensureDeferred
async def test_who_built_each_ref_is_read_in_one_query(
    event_log: EventLog, history: History
) -> None:
    """The build of the ref's latest completed run, else of its latest event: what each ref's
    own page says, for many refs at once."""
    refs = ["raw/01", "raw/02", "daily/01", "x/1", "never/seen"]
    builders = await event_log.partition_builders(refs)
    assert builders["raw/01"] == "b1"  # b5 only skipped it
    for ref in refs:
        partition = await event_log.get_partition(ref)
        if partition is None:
            assert ref not in builders
            continue
        completed = [
            run["build_request_id"] for run in partition["job_runs"]
            if run["status"] == J.JOB_COMPLETED.value
        ]
        assert builders[ref] == (completed[0] if completed else partition["build_request_id"])


@pytest_twisted.ensureDeferred
async def test_a_retry_names_the_build_it_retries_and_that_build_its_retries(
    event_log: EventLog, history: History
) -> None:
    for retry in ("b6", "b7"):
        await history.add(retry, BuildRequestEvent(
            B.BUILD_REQUEST_RECEIVED, ("daily/01",), "retry", retry_of="b2"
        ))
    first = (await event_log.events(build_request_id="b7"))["events"][0]
    assert first["retry_of"] == "b2"
    original = await event_log.get_build("b2")
    assert (original["retry_of"], original["retried_by"]) == (None, ["b7", "b6"])
    retry = await event_log.get_build("b6")
    assert (retry["retry_of"], retry["retried_by"]) == ("b2", [])
    assert "retry_of" not in (await event_log.events(build_request_id="b1"))["events"][0]
    listed = {b["build_request_id"]: b["retry_of"] for b in
              (await event_log.list_builds())["builds"]}
    assert (listed["b7"], listed["b1"]) == ("b2", None)
    summary = await event_log.build_summary("b6")
    assert summary is not None and "tasks" not in summary and summary["retry_of"] == "b2"
