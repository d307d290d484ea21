"""``GET /metrics`` of a real service after a real build (SPEC §5.9)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import EXAMPLES
from tests.polling import poll_until
from tests.service.browser import api
from tests.service.conftest import Service, start_service

from databuild.bel.events import Event, JobEvent
from databuild.service.metrics import ServiceMetrics

FAMILIES = {
    "databuild_builds",
    "databuild_job_runs",
    "databuild_job_run_duration_seconds",
    "databuild_job_runs_running",
    "databuild_job_runs_queued",
    "databuild_active_builds",
    "databuild_progress_streams_open",
    "databuild_event_log_appends",
    "databuild_event_log_append_seconds",
    "databuild_lease_state",
}
JOBS = {"ingest_color_votes", "trailing_color_votes", "aggregate_color_votes", "color_vote_report"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workspace = tmp_path_factory.mktemp("metrics") / "color_votes"
    shutil.copytree(EXAMPLES / "color_votes", workspace)
    running = start_service(workspace, "--idle-timeout", "0")
    yield running
    running.stop()


def scrape(service: Service, headers: dict[str, str]) -> tuple[str, str]:
    request = urllib.request.Request(service.url + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["content-type"], response.read().decode()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_after_a_build_name_jobs_and_never_partitions(service: Service) -> None:
    code, body = api(service, "POST", "/api/v1/builds",
                     {"partitions": ["color_vote_report/2026-01-05/red"]})
    assert code == 202
    build_id = body["build_request_id"]
    poll_until(
        lambda: api(service, "GET", f"/api/v1/builds/{build_id}")[1]["status"]
        == "BUILD_REQUEST_COMPLETED", "the build to complete", 120,
    )
    content_type, text = scrape(service, service.headers())
    assert content_type.startswith("text/plain")
    found = families(text)
    assert set(found) >= FAMILIES

    def value(name: str, **labels: str) -> float:
        return sum(s.value for f in found.values() for s in f.samples
                   if s.name == name and labels.items() <= s.labels.items())

    assert value("databuild_builds_total", status="BUILD_REQUEST_COMPLETED") == 1
    runs = {s.labels["job_label"] for s in found["databuild_job_runs"].samples}
    assert runs == JOBS
    durations = {s.labels["job_label"] for s in found["databuild_job_run_duration_seconds"].samples
                 if s.name.endswith("_count")}
    assert durations == JOBS
    assert value("databuild_job_runs_total", job_label="color_vote_report",
                 status="JOB_COMPLETED") == 1
    assert value("databuild_active_builds") == 0
    assert value("databuild_job_runs_running") == 0
    assert value("databuild_event_log_appends_total", event_type="job_graph") == 1
    assert value("databuild_event_log_append_seconds_count") > 0
    assert value("databuild_lease_state", databuild_lease_state="none") == 1
    refs = {t["outputs"][0] for t in api(service, "GET", f"/api/v1/tasks?build_request_id="
                                         f"{build_id}&limit=1000")[1]["tasks"]}
    label_values = {v for f in found.values() for s in f.samples for v in s.labels.values()}
    assert not label_values & refs
    assert not any("/" in v for v in label_values)


def test_metrics_need_the_token(service: Service) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(service, {})
    assert refused.value.code == 401


def test_lease_hook_and_running_gauges_follow_events() -> None:
    metrics = ServiceMetrics(lambda: 3)
    metrics.set_lease_state("held")
    metrics.observe(Event("b1", JobEvent("r1", "job_a", "JOB_SCHEDULED", ("a/1",))))
    found = families(metrics.render().decode())
    assert found["databuild_job_runs_queued"].samples[0].value == 1
    metrics.observe(Event("b1", JobEvent("r1", "job_a", "JOB_RUNNING", ("a/1",))))
    found = families(metrics.render().decode())
    assert found["databuild_job_runs_running"].samples[0].value == 1
    assert found["databuild_job_runs_queued"].samples[0].value == 0
    assert found["databuild_active_builds"].samples[0].value == 3
    lease = found["databuild_lease_state"].samples
    lease = {s.labels["databuild_lease_state"]: s.value for s in lease}
    assert lease == {"none": 0, "held": 1, "lost": 0}
