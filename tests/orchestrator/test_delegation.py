"""Delegation: no job runs for a partition that is AVAILABLE or being built by another build."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest_twisted
from tests.orchestrator.conftest import Harness, start_harness, stop_harness
from tests.polling import poll_until_async
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults


async def wait_for_delegation(harness: Harness, build_ids: list[str], count: int = 1) -> None:
    """Wait until ``count`` of ``build_ids`` have recorded a delegation."""

    async def delegated() -> bool:
        events = await harness.events()
        return len({
            e["build_request_id"] for e in events
            if e["event_type"] == "delegation" and e["build_request_id"] in build_ids
        }) >= count  # fmt: skip

    await poll_until_async(delegated, f"{count} of the builds to delegate")


async def running_events(harness: Harness) -> Counter[str]:
    """How many times the log saw each ref's producing run start."""
    return Counter(
        ref
        for e in await harness.events()
        if e["event_type"] == "job" and e["status"] == "JOB_RUNNING"
        for ref in e["outputs"]
    )


@pytest_twisted.ensureDeferred
async def test_an_available_partition_is_skipped_and_force_rebuilds_only_it(
    harness: Harness,
) -> None:
    harness.plan({"work/b": {"inputs": ["work/a"]}})
    first = await harness.build(["work/b"])
    again = await harness.build(["work/b"])
    assert again["status"] == "BUILD_REQUEST_COMPLETED"
    assert [t["status"] for t in again["tasks"]] == ["JOB_SKIPPED"]
    events = await harness.events(again["build_request_id"])
    # A skipped requested ref goes REQUESTED -> DELEGATED -> AVAILABLE, the builder named in
    # the message: nothing is awaited, so no delegation event.
    assert [e for e in events if e["event_type"] == "delegation"] == []
    assert [
        (e["status"], e["message"])
        for e in events
        if e["event_type"] == "partition" and e["partition_ref"] == "work/b"
    ] == [
        ("PARTITION_REQUESTED", "requested"),
        ("PARTITION_DELEGATED",
         f"already available; not built again (built by build {first['build_request_id']})"),
        ("PARTITION_AVAILABLE", "already available"),
    ]
    assert Counter(r["ref"] for r in harness.starts()) == {"work/a": 1, "work/b": 1}

    forced = await harness.build(["work/b"], force=True)
    assert forced["status"] == "BUILD_REQUEST_COMPLETED"
    assert [t["status"] for t in forced["tasks"]] == ["JOB_COMPLETED"]
    assert Counter(r["ref"] for r in harness.starts()) == {"work/a": 1, "work/b": 2}


@pytest_twisted.ensureDeferred
async def test_available_requested_refs_are_kept_in_one_skipped_run_without_their_config(
    harness: Harness,
) -> None:
    refs = [f"work/{i}" for i in range(5)]
    await harness.build(refs)
    (harness.root / "plan.json").write_text("not JSON: a config call would fail")
    again = await harness.build(refs)
    assert again["status"] == "BUILD_REQUEST_COMPLETED"
    assert [(t["status"], sorted(t["outputs"])) for t in again["tasks"]] == [
        ("JOB_SKIPPED", refs)
    ]
    events = await harness.events(again["build_request_id"])
    assert Counter(e["status"] for e in events if e["event_type"] == "partition") == {
        "PARTITION_REQUESTED": 5, "PARTITION_DELEGATED": 5, "PARTITION_AVAILABLE": 5
    }


@pytest_twisted.ensureDeferred
async def test_a_kept_ref_that_a_forced_build_fails_meanwhile_fails_and_is_not_run(
    harness: Harness,
) -> None:
    gate = harness.root / "go"
    harness.plan({})
    first = await harness.build(["work/x"])
    assert first["status"] == "BUILD_REQUEST_COMPLETED"
    harness.plan({"work/x": {"exit": 1}, "work/slow": {"config_until": str(gate)}})
    try:
        kept = await harness.orchestrator.submit(["work/x", "work/slow"])
        await poll_until_async((harness.root / "config-started").exists, "analysis to start")
        forced = await harness.build(["work/x"], force=True)
        assert forced["status"] == "BUILD_REQUEST_FAILED"
    finally:
        gate.touch()
    build = await harness.finished(kept)
    assert build["status"] == "BUILD_REQUEST_FAILED"
    assert [
        (e["status"], e["message"])
        for e in await harness.events(kept)
        if e["event_type"] == "partition" and e["partition_ref"] == "work/x"
    ] == [
        ("PARTITION_REQUESTED", "requested"),
        ("PARTITION_FAILED", "no longer available: another build rebuilt it without success "
                             "after this build's analysis; ask for it again"),
    ]
    assert Counter(r["ref"] for r in harness.starts()) == {"work/x": 2, "work/slow": 1}


@pytest_twisted.ensureDeferred
async def test_two_builds_of_one_partition_run_its_job_once(harness: Harness) -> None:
    go = harness.root / "go"
    harness.plan(
        {
            "work/base": {"until": str(go)},
            "work/x": {"inputs": ["work/base"]},
            "work/y": {"inputs": ["work/base"]},
        }
    )
    ids = await gatherResults(
        [harness.orchestrator.submit(["work/x"]), harness.orchestrator.submit(["work/y"])]
    )
    await wait_for_delegation(harness, ids)
    go.touch()
    builds = [await harness.finished(i) for i in ids]
    assert [b["status"] for b in builds] == ["BUILD_REQUEST_COMPLETED"] * 2
    assert Counter(r["ref"] for r in harness.starts()) == {"work/base": 1, "work/x": 1, "work/y": 1}
    assert await running_events(harness) == {"work/base": 1, "work/x": 1, "work/y": 1}
    delegations = [e for e in await harness.events() if e["event_type"] == "delegation"]
    assert len(delegations) == 1
    waiting = delegations[0]["build_request_id"]
    assert {waiting, delegations[0]["delegated_to_build_request_id"]} == set(ids)
    waiting_events = await harness.events(waiting)
    assert [
        e["status"] for e in waiting_events
        if e["event_type"] == "partition" and e["partition_ref"] == "work/base"
    ] == ["PARTITION_SCHEDULED", "PARTITION_DELEGATED", "PARTITION_AVAILABLE"]


@pytest_twisted.ensureDeferred
async def test_ten_concurrent_overlapping_builds_run_each_job_exactly_once(
    harness: Harness,
) -> None:
    go = harness.root / "go"
    plan = {"work/base": {"until": str(go)}, "work/shared": {"inputs": ["work/base"]}}
    for i in range(10):
        plan[f"work/own{i}"] = {"inputs": ["work/shared", "work/base"]}
    harness.plan(plan)
    ids = await gatherResults(
        [
            harness.orchestrator.submit([f"work/own{i}", "work/shared", f"work/own{(i + 1) % 10}"])
            for i in range(10)
        ]
    )
    # All ten have planned while base is still being built; nine of them wait for others.
    await wait_for_delegation(harness, ids, count=9)
    go.touch()
    builds = [await harness.finished(i) for i in ids]
    assert {b["status"] for b in builds} == {"BUILD_REQUEST_COMPLETED"}
    expected = {ref: 1 for ref in plan}
    assert Counter(r["ref"] for r in harness.starts()) == expected
    assert await running_events(harness) == expected


@pytest_twisted.ensureDeferred
async def test_a_delegated_partition_that_fails_fails_the_waiting_build(harness: Harness) -> None:
    go = harness.root / "go"
    harness.plan(
        {
            "work/base": {"until": str(go), "exit": 2},
            "work/x": {"inputs": ["work/base"]},
            "work/y": {"inputs": ["work/base"]},
        }
    )
    first = await harness.orchestrator.submit(["work/x"])
    second = await harness.orchestrator.submit(["work/y"])
    await wait_for_delegation(harness, [first, second])
    go.touch()
    builds = [await harness.finished(i) for i in (first, second)]
    assert [b["status"] for b in builds] == ["BUILD_REQUEST_FAILED"] * 2
    assert Counter(r["ref"] for r in harness.starts()) == {"work/base": 1}
    [y] = [t for t in builds[1]["tasks"] if t["outputs"] == ["work/y"]]
    assert y["status"] == "JOB_FAILED"
    assert "work/base" in y["message"]
    assert "exited with code 2" in y["message"]


@pytest_twisted.ensureDeferred
async def test_cancelling_a_waiting_build_leaves_the_producing_build_alone(
    harness: Harness,
) -> None:
    go = harness.root / "go"
    harness.plan({"work/base": {"until": str(go)}})
    producer = await harness.orchestrator.submit(["work/base"])
    await poll_until_async(lambda: harness.starts("work/base"), "work/base to start")
    waiter = await harness.orchestrator.submit(["work/base"])
    await wait_for_delegation(harness, [waiter])
    await harness.orchestrator.cancel_build(waiter)
    go.touch()
    waited = await harness.log.get_build(waiter)
    assert waited["status"] == "BUILD_REQUEST_CANCELLED"
    assert waited["partitions"] == [{"partition_ref": "work/base", "status": "PARTITION_FAILED"}]
    produced = await harness.finished(producer)
    assert produced["status"] == "BUILD_REQUEST_COMPLETED"
    assert Counter(r["ref"] for r in harness.starts()) == {"work/base": 1}


@pytest_twisted.ensureDeferred
async def test_builds_planned_while_others_finish_the_same_refs_run_each_job_once(
    harness: Harness,
) -> None:
    """Each build is submitted as the one before starts executing, so builds keep planning
    while others' runs of the same refs end and while their events wait to be committed."""
    refs = [f"work/r{i}" for i in range(6)]
    harness.plan({ref: {"inputs": ["work/base"]} for ref in refs})
    ids: list[str] = []
    all_submitted: Deferred[None] = Deferred()

    async def submit(i: int) -> None:
        build_id = await harness.orchestrator.submit([refs[i % 6], refs[(i + 1) % 6], "work/base"])
        ids.append(build_id)
        if i + 1 == 30:
            all_submitted.callback(None)
            return

        def next_on_executing(event: dict[str, Any]) -> None:
            if event.get("status") == "BUILD_REQUEST_EXECUTING":
                ensureDeferred(submit(i + 1)).addErrback(all_submitted.errback)

        await harness.orchestrator.hub.subscribe(build_id, 0, next_on_executing)

    await submit(0)
    await all_submitted
    builds = [await harness.finished(i) for i in ids]
    assert {b["status"] for b in builds} == {"BUILD_REQUEST_COMPLETED"}
    expected = {ref: 1 for ref in [*refs, "work/base"]}
    assert Counter(r["ref"] for r in harness.starts()) == expected
    assert await running_events(harness) == expected


class HeldReads:
    """The event log, except that the read of who built one ref waits until the test lets it."""

    def __init__(self, ref: str) -> None:
        self._ref = ref
        self._log: Any = None
        self.reached: Deferred[None] = Deferred()
        self.release: Deferred[None] = Deferred()

    def wrap(self, log: Any) -> HeldReads:
        self._log = log
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    async def _held(self, refs: list[str]) -> dict[str, str]:
        self.reached.callback(None)
        await self.release
        return await self._log.partition_builders(refs)

    def partition_builders(self, refs: list[str]) -> Deferred[dict[str, str]]:
        if self._ref not in refs or self.reached.called:
            return self._log.partition_builders(refs)
        return ensureDeferred(self._held(refs))


@pytest_twisted.ensureDeferred
async def test_a_ref_made_while_a_build_prepares_its_plan_is_not_built_again(
    tmp_path: Path,
) -> None:
    """A build read which refs are AVAILABLE, then waits on the log (for who built work/base);
    meanwhile another build makes work/x and ends. Its plan must see work/x AVAILABLE."""
    held = HeldReads("work/base")
    harness = await start_harness(tmp_path / "ws", wrap_log=held.wrap)
    try:
        go = harness.root / "go"
        harness.plan({"work/x": {"until": str(go)}})
        await harness.build(["work/base"])  # AVAILABLE in the log, held by no live build
        producer = await harness.orchestrator.submit(["work/x"])
        await poll_until_async(lambda: harness.starts("work/x"), "work/x to start")
        planner = await harness.orchestrator.submit(["work/x", "work/base"])
        await held.reached  # the planner has read that work/x is not AVAILABLE
        go.touch()
        assert (await harness.finished(producer))["status"] == "BUILD_REQUEST_COMPLETED"
        held.release.callback(None)
        planned = await harness.finished(planner)
        assert planned["status"] == "BUILD_REQUEST_COMPLETED"
        assert Counter(r["ref"] for r in harness.starts()) == {"work/base": 1, "work/x": 1}
        assert {t["status"] for t in planned["tasks"]} == {"JOB_SKIPPED"}
        assert {
            e["partition_ref"]: e["message"]
            for e in await harness.events(planner)
            if e["event_type"] == "partition" and e["status"] == "PARTITION_DELEGATED"
        }["work/x"] == f"already available; not built again (built by build {producer})"
    finally:
        await stop_harness(harness)
