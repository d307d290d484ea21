"""The HTTP API of a real ``twistd databuild``, over real HTTP (SPEC §5.4-5.6).

One service serves the whole module; each test uses refs of its own.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
import treq
from tests.conftest import EXAMPLES
from tests.polling import poll_until_async
from tests.service.conftest import (
    Frame,
    Service,
    call,
    open_stream,
    read_stream,
    start_service,
    with_slow_job,
)
from twisted.internet.defer import Deferred, succeed
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

KEEPALIVE_S = 0.2


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workspace = tmp_path_factory.mktemp("api") / "color_votes"
    shutil.copytree(EXAMPLES / "color_votes", workspace)
    with_slow_job(workspace)
    running = start_service(
        workspace, "--idle-timeout", "0", "--keepalive", str(KEEPALIVE_S)
    )
    yield running
    running.stop()


def seg(text: str) -> str:
    """``text`` as one percent-encoded path segment."""
    return quote(text, safe="")


async def submit(service: Service, *refs: str, path: str = "/api/v1/cli/build") -> str:
    code, body = await call(service, "POST", path, {"partitions": list(refs)})
    assert code == 202, body
    assert body["progress_url"] == f"/api/v1/cli/builds/{body['build_request_id']}/progress"
    return body["build_request_id"]


async def build_status(service: Service, build_id: str) -> str:
    code, body = await call(service, "GET", f"/api/v1/builds/{build_id}")
    assert code == 200
    return body["status"]


async def finished(service: Service, build_id: str) -> str:
    async def final() -> str | None:
        status = await build_status(service, build_id)
        done = {"BUILD_REQUEST_COMPLETED", "BUILD_REQUEST_FAILED", "BUILD_REQUEST_CANCELLED"}
        return status if status in done else None

    return await poll_until_async(final, f"build {build_id} to finish", 60)


def release(service: Service, name: str) -> None:
    (service.workspace / f"release-{name}").touch()


async def running(service: Service, name: str) -> None:
    """Wait until the slow job for ``slow/NAME`` is running."""

    async def started() -> bool:
        return (service.workspace / "pids" / name).exists()

    await poll_until_async(started, f"slow/{name} to start", 60)


def assert_whole_stream(frames: list[Frame], build_id: str, status: str) -> None:
    *events, last = frames
    assert [f.event for f in events] == [f.data["event_type"] for f in events]
    assert [f.id for f in events] == [f.data["idx"] for f in events]
    assert [f.id for f in events] == sorted({f.id for f in events})
    assert all(f.data["build_request_id"] == build_id for f in events)
    assert last.event == "build_finished" and last.id is None
    assert set(last.data) == {"build_request_id", "status", "message"}
    assert (last.data["build_request_id"], last.data["status"]) == (build_id, status)


# --- health and auth ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_health_answers_without_a_token(service: Service) -> None:
    code, body = await call(service, "GET", "/api/v1/health", auth=False)
    assert code == 200
    assert body == {
        "status": "ok",
        "pid": service.process.pid,
        "version": service.info["version"],
        "workspace": str(service.workspace.resolve()),
        "active_builds": body["active_builds"],
        "idle_timeout": 0,
        "graph": {
            "label": "color_votes",
            "fingerprint": body["graph"]["fingerprint"],
            "loaded_at": body["graph"]["loaded_at"],
        },
        "event_log": str(service.workspace.resolve() / ".databuild" / "bel.sqlite"),
        "uptime_s": body["uptime_s"],
    }
    assert len(body["graph"]["fingerprint"]) == 16
    assert service.info["event_log"] == body["event_log"]


PROTECTED = [
    ("GET", "/api/v1/builds"),
    ("POST", "/api/v1/builds"),
    ("POST", "/api/v1/cli/build"),
    ("GET", "/api/v1/builds/x"),
    ("POST", "/api/v1/builds/x/cancel"),
    ("GET", "/api/v1/cli/builds/x/progress"),
    ("POST", "/api/v1/analyze"),
    ("GET", "/api/v1/partitions"),
    ("GET", "/api/v1/partitions/a%2Fb"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/x"),
    ("GET", "/api/v1/tasks"),
    ("GET", "/api/v1/tasks/x"),
    ("POST", "/api/v1/tasks/x/cancel"),
    ("GET", "/api/v1/tasks/x/logs"),
    ("GET", "/api/v1/events"),
    ("POST", "/api/v1/service/shutdown"),
    ("POST", "/api/v1/dashboard/login-code"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/api/no/such/path"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest_twisted.ensureDeferred
async def test_every_other_endpoint_refuses_a_missing_or_wrong_token(
    service: Service, method: str, path: str
) -> None:
    for kwargs in ({"auth": False}, {"token": "not-the-token"}):
        code, body = await call(service, method, path, {}, **kwargs)
        assert code == 401
        assert body["error"]["code"] == "unauthorized"
        assert "Bearer" in body["error"]["message"]


# --- builds and their progress -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_build_of_the_example_streams_every_event_then_build_finished(
    service: Service,
) -> None:
    build_id = await submit(service, "daily_votes/2026-01-01")
    frames = await read_stream(service, build_id)
    assert_whole_stream(frames, build_id, "BUILD_REQUEST_COMPLETED")
    code, logged = await call(
        service, "GET", f"/api/v1/events?build_request_id={build_id}&limit=1000"
    )
    assert code == 200
    assert [f.data for f in frames[:-1]] == logged["events"]
    jobs = [f.data for f in frames if f.event == "job" and f.data["status"] == "JOB_COMPLETED"]
    assert len(jobs) == 4


@pytest_twisted.ensureDeferred
async def test_finished_build_replays_and_resumes_after_last_event_id(service: Service) -> None:
    build_id = await submit(service, "daily_votes/2026-01-02", path="/api/v1/builds")
    whole = await read_stream(service, build_id)
    middle = whole[len(whole) // 2].id
    assert middle is not None
    resumed = await read_stream(service, build_id, last_event_id=middle)
    assert [f.id for f in resumed[:-1]] == [f.id for f in whole[:-1] if f.id > middle]
    assert resumed[-1] == whole[-1]
    by_query = await read_stream(service, build_id, query=f"?since={middle}")
    assert by_query == resumed


@pytest_twisted.ensureDeferred
async def test_a_stream_leaves_out_the_statuses_omit_names_and_still_ends(
    service: Service,
) -> None:
    build_id = await submit(service, "daily_votes/2026-01-04")
    whole = await read_stream(service, build_id)
    omit = {"PARTITION_REQUESTED", "PARTITION_AVAILABLE", "JOB_RUNNING"}
    assert omit <= {f.data.get("status") for f in whole[:-1]}
    some = await read_stream(service, build_id, query=f"?omit={','.join(sorted(omit))}")
    assert [f.data for f in some] == [f.data for f in whole if f.data.get("status") not in omit]
    assert some[-1].event == "build_finished"


@pytest.mark.parametrize(
    ("omit", "named"),
    [("PARTITION_AVAILABLE,nope", "'nope'"), ("available", "'available'"),
     ("BUILD_REQUEST_COMPLETED", "'BUILD_REQUEST_COMPLETED'")],
)
@pytest_twisted.ensureDeferred
async def test_omit_takes_only_job_and_partition_statuses(
    service: Service, omit: str, named: str
) -> None:
    build_id = await submit(service, "daily_votes/2026-01-05")
    await read_stream(service, build_id)
    code, body = await call(service, "GET", f"/api/v1/cli/builds/{build_id}/progress?omit={omit}")
    assert (code, body["error"]["code"]) == (400, "bad_request")
    assert named in body["error"]["message"] and "PARTITION_DELEGATED" in body["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_two_readers_of_a_running_build_each_see_every_event(service: Service) -> None:
    build_id = await submit(service, "slow/tworeaders")
    first = await open_stream(service, build_id)
    second = await open_stream(service, build_id)
    await running(service, "tworeaders")
    release(service, "tworeaders")
    frames = [await first[1].done, await second[1].done]
    assert frames[0] == frames[1]
    assert_whole_stream(frames[0], build_id, "BUILD_REQUEST_COMPLETED")


@pytest_twisted.ensureDeferred
async def test_reader_leaving_mid_build_does_not_stop_the_build(service: Service) -> None:
    build_id = await submit(service, "slow/leaver")
    _, reader = await open_stream(service, build_id, stop_after=1)
    await reader.done
    await running(service, "leaver")
    assert await build_status(service, build_id) == "BUILD_REQUEST_EXECUTING"
    release(service, "leaver")
    assert await finished(service, build_id) == "BUILD_REQUEST_COMPLETED"
    frames = await read_stream(service, build_id)
    assert_whole_stream(frames, build_id, "BUILD_REQUEST_COMPLETED")


@pytest_twisted.ensureDeferred
async def test_quiet_stream_gets_keepalive_comments(service: Service) -> None:
    build_id = await submit(service, "slow/quiet")
    _, reader = await open_stream(service, build_id)
    await running(service, "quiet")

    async def kept_alive() -> bool:
        return "keepalive" in reader.comments

    await poll_until_async(kept_alive, "a keepalive comment", 30)
    release(service, "quiet")
    await reader.done


@pytest_twisted.ensureDeferred
async def test_cancelling_a_running_build_ends_it_cancelled(service: Service) -> None:
    build_id = await submit(service, "slow/cancelme")
    _, reader = await open_stream(service, build_id)
    await running(service, "cancelme")
    code, body = await call(service, "POST", f"/api/v1/builds/{build_id}/cancel")
    assert code == 200
    assert body["build_request_id"] == build_id
    frames = await reader.done
    assert frames[-1].data["status"] == "BUILD_REQUEST_CANCELLED"
    code, body = await call(service, "POST", f"/api/v1/builds/{build_id}/cancel")
    assert (code, body["error"]["code"]) == (409, "conflict")


@pytest_twisted.ensureDeferred
async def test_cancelling_a_task_fails_its_build(service: Service) -> None:
    build_id = await submit(service, "slow/taskcancel")
    await running(service, "taskcancel")
    code, tasks = await call(service, "GET", f"/api/v1/tasks?build_request_id={build_id}")
    assert code == 200
    (task,) = tasks["tasks"]
    code, body = await call(service, "POST", f"/api/v1/tasks/{task['job_run_id']}/cancel")
    assert code == 200
    assert body["job_run_id"] == task["job_run_id"]
    assert await finished(service, build_id) in {
        "BUILD_REQUEST_FAILED", "BUILD_REQUEST_CANCELLED"}
    code, body = await call(service, "GET", f"/api/v1/tasks/{task['job_run_id']}")
    assert body["status"] == "JOB_CANCELLED"


# --- the read side ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_lists_and_show_endpoints_describe_a_finished_build(service: Service) -> None:
    build_id = await submit(service, "daily_votes/2026-01-03")
    await read_stream(service, build_id)

    code, builds = await call(service, "GET", "/api/v1/builds?status=completed&limit=1000")
    assert code == 200 and build_id in [b["build_request_id"] for b in builds["builds"]]
    code, build = await call(service, "GET", f"/api/v1/builds/{build_id}")
    assert build["requested_partitions"] == ["daily_votes/2026-01-03"]
    assert build["job_runs"]["JOB_COMPLETED"] == 4

    ref = "daily_color_votes/2026-01-03/red"
    code, partitions = await call(
        service, "GET", "/api/v1/partitions?pattern=daily_color_votes/2026-01-03/*"
    )
    assert code == 200
    assert sorted(p["partition_ref"] for p in partitions["partitions"]) == [
        f"daily_color_votes/2026-01-03/{c}" for c in ("blue", "green", "red")]
    code, partition = await call(service, "GET", f"/api/v1/partitions/{seg(ref)}")
    assert code == 200
    assert (partition["partition_ref"], partition["status"]) == (ref, "PARTITION_AVAILABLE")

    code, jobs = await call(service, "GET", "/api/v1/jobs")
    assert "ingest_color_votes" in [j["job_label"] for j in jobs["jobs"]]
    code, job = await call(service, "GET", f"/api/v1/jobs/{seg('ingest_color_votes')}")
    assert code == 200 and job["succeeded"] >= 3

    code, tasks = await call(
        service, "GET", f"/api/v1/tasks?build_request_id={build_id}&job_label=aggregate_color_votes"
    )
    (task,) = tasks["tasks"]
    code, shown = await call(service, "GET", f"/api/v1/tasks/{task['job_run_id']}")
    assert (code, shown["status"], shown["exit_code"]) == (200, "JOB_COMPLETED", 0)
    code, logs = await call(service, "GET", f"/api/v1/tasks/{task['job_run_id']}/logs")
    assert code == 200 and logs["job_run_id"] == task["job_run_id"]
    assert any("aggregate_color_votes" in line["text"] for line in logs["lines"])


@pytest_twisted.ensureDeferred
async def test_events_page_with_since_and_limit(service: Service) -> None:
    await read_stream(service, await submit(service, "daily_votes/2026-01-04"))
    code, first = await call(service, "GET", "/api/v1/events?limit=3")
    assert code == 200 and len(first["events"]) == 3
    code, rest = await call(service, "GET", f"/api/v1/events?since={first['next_since']}&limit=2")
    assert [e["idx"] for e in rest["events"]] == [first["next_since"] + 1, first["next_since"] + 2]


@pytest_twisted.ensureDeferred
async def test_analyze_shows_the_job_graph_and_records_nothing(service: Service) -> None:
    code, before = await call(service, "GET", "/api/v1/builds?limit=1000")
    code, body = await call(
        service, "POST", "/api/v1/analyze", {"partitions": ["daily_votes/2026-02-01"]}
    )
    assert code == 200
    graph = body["job_graph"]
    assert graph["outputs"] == ["daily_votes/2026-02-01"]
    assert sorted(r["job_label"] for r in graph["job_runs"]) == [
        "aggregate_color_votes", *["ingest_color_votes"] * 3]
    code, after = await call(service, "GET", "/api/v1/builds?limit=1000")
    assert after == before



@pytest_twisted.ensureDeferred
async def test_the_builds_list_is_never_older_than_the_log(service: Service) -> None:
    code, first = await call(service, "GET", "/api/v1/builds")
    assert code == 200
    assert await call(service, "GET", "/api/v1/builds") == (200, first)
    build_id = await submit(service, "daily_votes/2026-02-02")
    code, listed = await call(service, "GET", "/api/v1/builds")
    assert listed["builds"][0]["build_request_id"] == build_id
    status = await finished(service, build_id)
    code, listed = await call(service, "GET", "/api/v1/builds")
    assert listed["builds"][0]["status"] == status
    assert await call(service, "GET", "/api/v1/builds/") == (200, listed)


# --- bad input -------------------------------------------------------------------------------


BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/api/v1/builds", b"{not json", 400, "invalid_json"),
    ("POST", "/api/v1/builds", b"[1, 2]", 400, "invalid_json"),
    ("POST", "/api/v1/builds", {}, 400, "bad_request"),
    ("POST", "/api/v1/builds", {"partitions": "a/b"}, 400, "invalid_ref"),
    ("POST", "/api/v1/builds", {"partitions": []}, 400, "invalid_ref"),
    ("POST", "/api/v1/builds", {"partitions": [7]}, 400, "invalid_ref"),
    ("POST", "/api/v1/builds", {"partitions": ["has space"]}, 400, "invalid_ref"),
    ("POST", "/api/v1/cli/build", {"partitions": ["x" * 1025]}, 400, "invalid_ref"),
    ("POST", "/api/v1/builds", {"partitions": ["a"], "force": "yes"}, 400, "bad_request"),
    ("POST", "/api/v1/builds", {"partitions": ["a"], "forse": True}, 400, "bad_request"),
    ("POST", "/api/v1/analyze", {"partitions": ["no_job_makes/this"]}, 400, "lookup_failed"),
    ("POST", "/api/v1/analyze", {"partitions": [None]}, 400, "invalid_ref"),
    ("POST", "/api/v1/service/shutdown", b"x" * (1024 * 1024 + 1), 413, "body_too_large"),
    ("POST", "/api/v1/builds", b"x" * (16 * 1024 * 1024 + 1), 413, "body_too_large"),
    ("POST", "/api/v1/analyze", b"x" * (16 * 1024 * 1024 + 1), 413, "body_too_large"),
    ("POST", "/api/v1/builds", {"partitions": ["a"] * 100_001}, 413, "too_many_refs"),
    ("POST", "/api/v1/analyze", {"partitions": ["a"] * 100_001}, 413, "too_many_refs"),
    ("POST", "/api/v1/builds/nosuchbuild/retry", None, 404, "not_found"),
    ("POST", "/api/v1/builds/nosuchbuild/retry", {"force": True}, 400, "bad_request"),
    ("POST", "/api/v1/service/shutdown", {"force": 1}, 400, "bad_request"),
    ("GET", "/api/v1/builds?limit=0", None, 400, "invalid_query"),
    ("GET", "/api/v1/builds?limit=1001", None, 400, "invalid_query"),
    ("GET", "/api/v1/builds?limit=ten", None, 400, "invalid_query"),
    ("GET", "/api/v1/tasks?offset=-1", None, 400, "invalid_query"),
    ("GET", "/api/v1/builds?status=sleeping", None, 400, "invalid_status"),
    ("GET", "/api/v1/partitions?status=nope", None, 400, "invalid_status"),
    ("GET", "/api/v1/events?since=x", None, 400, "invalid_query"),
    ("GET", "/api/v1/partitions/has%20space", None, 400, "invalid_ref"),
    ("GET", "/api/v1/partitions/%FF", None, 400, "bad_request"),
    ("GET", "/api/v1/builds/nosuchbuild", None, 404, "not_found"),
    ("POST", "/api/v1/builds/nosuchbuild/cancel", None, 404, "not_found"),
    ("GET", "/api/v1/cli/builds/nosuchbuild/progress", None, 404, "not_found"),
    ("GET", "/api/v1/partitions/no%2Fsuch%2Fref", None, 404, "not_found"),
    ("GET", "/api/v1/partitions/daily_votes/2026-01-01", None, 404, "not_found"),
    ("GET", "/api/v1/jobs/no_such_job", None, 404, "not_found"),
    ("GET", "/api/v1/tasks/nosuchtask", None, 404, "not_found"),
    ("GET", "/api/v1/tasks/nosuchtask/logs", None, 404, "not_found"),
    ("POST", "/api/v1/tasks/nosuchtask/cancel", None, 404, "not_found"),
    ("GET", "/api/v1/nothing/here", None, 404, "not_found"),
    ("GET", "/api/", None, 404, "not_found"),
    ("DELETE", "/api/v1/builds", None, 405, "method_not_allowed"),
    ("GET", "/api/v1/analyze", None, 405, "method_not_allowed"),
    ("PUT", "/api/v1/health", None, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD_REQUESTS)
@pytest_twisted.ensureDeferred
async def test_bad_request_gets_a_json_error_naming_it(
    service: Service, method: str, path: str, body: Any, status: int, code: str
) -> None:
    if isinstance(body, bytes):
        answer = await call(service, method, path, data=body)
    else:
        answer = await call(service, method, path, body)
    assert answer[0] == status, answer
    assert answer[1]["error"]["code"] == code
    assert answer[1]["error"]["message"]
    health, _ = await call(service, "GET", "/api/v1/health")
    assert health == 200


@implementer(IBodyProducer)
class Chunked:
    """A body of unknown length, so it is sent chunked, without Content-Length."""

    length = UNKNOWN_LENGTH

    def __init__(self, size: int) -> None:
        self._size = size

    def startProducing(self, consumer: Any) -> Deferred[None]:
        chunk = b"x" * 65536
        for _ in range(self._size // len(chunk) + 1):
            consumer.write(chunk)
        return succeed(None)

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def stopProducing(self) -> None: ...


@pytest_twisted.ensureDeferred
async def test_chunked_body_over_the_limit_is_refused(service: Service) -> None:
    response = await treq.post(
        service.url + "/api/v1/builds", data=Chunked(16 * 1024 * 1024), headers=service.headers()
    )
    assert response.code == 413
    assert (await response.json())["error"]["code"] == "body_too_large"


@pytest_twisted.ensureDeferred
async def test_method_not_allowed_names_the_allowed_ones(service: Service) -> None:
    response = await treq.request(
        "DELETE", service.url + "/api/v1/analyze", headers=service.headers()
    )
    assert response.code == 405
    assert response.headers.getRawHeaders("allow") == ["POST"]
    await response.content()


@pytest_twisted.ensureDeferred
async def test_resume_with_a_bad_last_event_id_is_refused(service: Service) -> None:
    response, reader = await open_stream(service, "whatever", last_event_id=None,
                                         query="?since=-1")
    assert response.code == 400
    await reader.done

